"""The air node's SCD41 on a simulated bus: a real firmware node (MicroPython unix port) whose
SCD41 behaves as the datasheet says (idle at power-up, NACK until started, data every 5 s), read
by a real Modbus master. The old firmware never sent start_periodic_measurement: its CO2 register
stayed 0 and scd_fault came up. A brown-out of the sensor mid-run (back to idle) must be
recovered without a node reset."""

from __future__ import annotations

from tests.bus.conftest import MAPS, Bus, bits
from tests.conftest import wait_for

AIR = MAPS.classes["air"]


def _co2(bus: Bus, address: int) -> float:
    values = bus.master.try_values(address)
    return 0.0 if values is None else values["co2"]


def test_air_node_starts_its_scd41_and_reads_co2(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(5, "air")])
    wait_for(lambda: 300 < _co2(bus, 5) < 700, 15, what="a CO2 reading from the started SCD41")
    values = bus.master.values(5)
    assert "scd_fault" not in bits(values["fault_bits"], AIR.fault_bits)


def test_a_power_cycled_scd41_is_started_again(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(5, "air")])
    wait_for(lambda: 300 < _co2(bus, 5) < 700, 15, what="the first CO2 reading")
    # the sensor browns out for 2 s (it comes back idle) while a generator's exhaust arrives
    bus.feed.apply(5, "scd41_power_cycle", {"off_s": 2.0})
    bus.feed.apply(5, "co2_plume", {"ppm": 1500.0})
    wait_for(lambda: _co2(bus, 5) > 1200, 60, what="CO2 read again after the power cycle")
    wait_for(lambda: "scd_fault" not in bits(bus.master.values(5)["fault_bits"], AIR.fault_bits),
             20, what="no SCD41 fault once it measures again")
