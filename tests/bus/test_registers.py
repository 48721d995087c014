"""What a technician sees with a Modbus tool: identity, health, thresholds, exceptions."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.pdu import ExceptionResponse

from tests.bus.conftest import MAPS, STATUS, Bus, close_bus, open_bus
from tests.conftest import wait_for

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
VERSION = tuple(int(x) for x in re.search(
    r"VERSION = \((\d+), (\d+), (\d+)\)", (FIRMWARE / "app/version.py").read_text()).groups())


@pytest.fixture(scope="module")
def street() -> Iterator[Bus]:
    """One node of each class on one bus, shared by the tests that only read (or whose writes
    the node refuses): booted once."""
    bus = open_bus([(1, "fire"), (2, "flood"), (3, "water"), (4, "air")])
    yield bus
    close_bus(bus)


def test_every_class_answers_its_identity_block(street: Bus) -> None:
    bus = street
    for address, cls in [(1, "fire"), (2, "flood"), (3, "water"), (4, "air")]:
        ident = bus.master.inputs(address, 0, 6)
        assert ident[0] == MAPS.map_version == 1
        assert ident[1] == MAPS.classes[cls].class_id
        assert tuple(ident[2:5]) == VERSION
        assert not ident[5] & (1 << STATUS["alarm"]), f"{cls} alarms in clean conditions"
        values = bus.master.values(address)
        assert values["boot_count"] >= 1
        assert values["fault_bits"] == 0, f"{cls} reports a fault with healthy sensors"


def test_readings_follow_the_physics(street: Bus) -> None:
    bus = street
    # a few sample periods, the median filters full
    wait_for(lambda: bus.master.values(1)["uptime"] >= 3, 10, what="3 s of fire samples")
    fire = bus.master.values(1)
    assert fire["temperature"] == pytest.approx(bus.feed.truth(1)["temperature"], abs=1.0)
    assert fire["smoke"] < 0.5
    air = wait_for(lambda: (v := bus.master.values(4)) and v["pm2_5"] > 0 and v, 10,
                   what="PM2.5 from the PMS5003")
    assert isinstance(air, dict)
    truth = bus.feed.truth(4)
    assert air["pm2_5"] == pytest.approx(truth["pm2_5"], abs=max(3.0, 0.2 * truth["pm2_5"]))
    assert air["aqi_vn"] > 0 and air["aqi_us"] > 0
    # the SCD41's first measurement comes 5 s after the node starts it (datasheet)
    co2 = wait_for(lambda: bus.master.values(4)["co2"], 10, what="the SCD41's first CO2")
    assert isinstance(co2, float) and 380 < co2 < 2000


def test_modbus_exceptions_name_what_was_wrong(street: Bus) -> None:
    bus = street
    sent_before = bus.master.values(1)["exceptions_sent"]
    client = bus.master.client
    past_end = client.read_input_registers(0, count=100, device_id=1)
    assert isinstance(past_end, ExceptionResponse) and past_end.exception_code == 2
    too_high = client.write_register(16, 9999, device_id=1)  # smoke alarm 99.99 %/m
    assert isinstance(too_high, ExceptionResponse) and too_high.exception_code == 3
    unmapped = client.write_register(15, 1, device_id=1)
    assert isinstance(unmapped, ExceptionResponse) and unmapped.exception_code == 2
    unsupported = client.read_discrete_inputs(0, count=1, device_id=1)  # FC02: not offered
    assert isinstance(unsupported, ExceptionResponse) and unsupported.exception_code == 1
    values = bus.master.values(1)
    assert values["exceptions_sent"] >= sent_before + 4
    assert bus.master.holdings(1, 16)[0] == 400  # the refused write changed nothing


def test_broadcast_write_reaches_every_node_and_nobody_answers(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "fire"), (2, "fire")])
    client = bus.master.client
    client.write_register(1, 1000, device_id=0, no_response_expected=True)  # sample period
    time.sleep(0.3)
    assert bus.master.holdings(1, 1)[0] == 1000
    assert bus.master.holdings(2, 1)[0] == 1000


def test_thresholds_survive_a_reboot_command(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(7, "flood")])
    boots = bus.master.values(7)["boot_count"]
    bus.master.write(7, 16, 45)  # stage 1 at 0.45 m
    bus.master.write(7, 0, MAPS.commands["reboot"])
    wait_for(lambda: (v := bus.master.try_values(7)) and v["boot_count"] > boots, 15,
             what="the node to come back after the reboot command")
    assert bus.master.holdings(7, 16)[0] == 45
    assert bus.master.holdings(7, 0)[0] == 0  # the command register reads 0


def test_a_power_cut_keeps_thresholds_and_counts_the_boot(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(3, "water")])
    bus.master.write(3, 21, 30)  # chlorine low alarm at 0.30 mg/L
    boots = bus.master.values(3)["boot_count"]
    bus.sim.node(3).kill()  # SIGKILL: no chance to flush anything
    values = wait_for(lambda: (v := bus.master.try_values(3)) and v["boot_count"] > boots and v,
                      15, what="the node to reboot after the power cut")
    assert isinstance(values, dict)
    assert bus.master.holdings(3, 21)[0] == 30
    assert values["uptime"] < 10


def test_factory_reset_restores_defaults(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "air")])
    bus.master.write(1, 18, 2000)  # CO2 alarm 2000 ppm
    bus.master.write(1, 0, MAPS.commands["factory"])
    assert bus.master.holdings(1, 18)[0] == 1500


def test_corrupt_stored_thresholds_fall_back_to_defaults_and_say_so(start_bus, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "fire")], workdir=tmp_path)
    bus.master.write(1, 16, 350)
    node = bus.sim.node(1)
    config = node.root / "data" / "config.json"
    config.write_bytes(config.read_bytes()[:-5] + b"XXXXX")  # flash corruption
    boots = bus.master.values(1)["boot_count"]
    node.kill()
    values = wait_for(lambda: (v := bus.master.try_values(1)) and v["boot_count"] > boots and v,
                      15, what="reboot")
    assert isinstance(values, dict)
    assert int(values["status"]) & (1 << STATUS["config_error"])
    assert bus.master.holdings(1, 16)[0] == 400
    bus.master.write(1, 16, 380)  # a good write repairs the record and clears the flag
    assert not int(bus.master.values(1)["status"]) & (1 << STATUS["config_error"])


def test_a_broadcast_reboot_restarts_every_node(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "water"), (2, "air")])
    boots = {a: bus.master.values(a)["boot_count"] for a in (1, 2)}
    # pymodbus' sync client does not keep the t3.5 silence after a reply: node 1 would hear
    # node 2's reply and this request as one garbled frame (as on a real bus). Keep it here.
    time.sleep(0.01)
    bus.master.client.write_register(0, MAPS.commands["reboot"], device_id=0,
                                     no_response_expected=True)
    time.sleep(0.2)  # the spec's turnaround delay after a broadcast, before the next request
    for address in (1, 2):
        wait_for(lambda a=address: (v := bus.master.try_values(a)) and  # type: ignore[misc]
                 v["boot_count"] > boots[a], 20, what=f"node {address} to reboot")
