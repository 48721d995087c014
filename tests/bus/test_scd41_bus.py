"""The air node's SCD41 on a simulated bus: a real firmware node (MicroPython unix port) whose
SCD41 behaves as the datasheet says (idle at power-up, NACK until started, data every 5 s), read
by a real Modbus master. The old firmware never sent start_periodic_measurement: its CO2 register
stayed 0 and scd_fault came up. A brown-out of the sensor mid-run (back to idle) must be
recovered without a node reset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bus.conftest import MAPS, Bus, bits, close_bus, open_bus
from tests.conftest import wait_for

AIR = MAPS.classes["air"]


def _co2(bus: Bus, address: int) -> float:
    values = bus.master.try_values(address)
    return 0.0 if values is None else values["co2"]


@pytest.fixture(scope="module")
def air_station() -> Iterator[Bus]:
    """One air node for the module: the start-up test only reads it, and the brown-out test,
    which comes last, begins with the same first reading (booted once, the 5 s to the first
    measurement waited once)."""
    bus = open_bus([(5, "air")])
    yield bus
    close_bus(bus)


def test_air_node_starts_its_scd41_and_reads_co2(air_station: Bus) -> None:
    bus = air_station
    wait_for(lambda: 300 < _co2(bus, 5) < 700, 15, what="a CO2 reading from the started SCD41")
    values = bus.master.values(5)
    assert "scd_fault" not in bits(values["fault_bits"], AIR.fault_bits)


def test_a_power_cycled_scd41_is_started_again(air_station: Bus) -> None:
    bus = air_station
    wait_for(lambda: 300 < _co2(bus, 5) < 700, 15, what="the first CO2 reading")
    # the sensor browns out for 2 s (it comes back idle) while a generator's exhaust arrives
    bus.feed.apply(5, "scd41_power_cycle", {"off_s": 2.0})
    bus.feed.apply(5, "co2_plume", {"ppm": 1500.0})
    wait_for(lambda: _co2(bus, 5) > 1200, 60, what="CO2 read again after the power cycle")
    wait_for(lambda: "scd_fault" not in bits(bus.master.values(5)["fault_bits"], AIR.fault_bits),
             20, what="no SCD41 fault once it measures again")
