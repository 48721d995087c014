"""Register words in, MQTT messages out: what a dispatcher sees from one node's registers.

Pure tests of :class:`gateway.decode.DeviceDecoder`. The words are built from the real register
maps (``hardware/registers/*.toml``) with :meth:`Register.encode`, so a change to a map is a
change to these vectors, never a silent drift.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.decode import (
    ALARM_WORD_COUNT,
    ALARM_WORD_START,
    COMMON_INPUTS,
    DeviceDecoder,
    DeviceInfo,
)
from gateway.outbox import Message
from hardware.regmap import Bit, load_maps

MAPS = load_maps()
GW = "gw-test"
T0 = datetime(2026, 11, 23, 5, 0, 0, 123000, tzinfo=UTC)


def mask(bits: tuple[Bit, ...], *names: str) -> int:
    """The register word with the named bits set."""
    by_name = {b.name: b.bit for b in bits}
    return sum(1 << by_name[name] for name in names)


def registers(cls: str, count: int | None = None, **values: float) -> list[int]:
    """Input registers from address 0 of a healthy node of ``cls``, with ``values`` set."""
    cmap = MAPS.classes[cls]
    words = [0] * cmap.input_count
    base: dict[str, float] = {"map_version": MAPS.map_version, "device_class": cmap.class_id,
                              "fw_major": 1, "fw_minor": 2, "fw_patch": 3, "uptime": 3600,
                              "boot_count": 7, "alarm_seq": 40}
    base.update(values)
    for name, value in base.items():
        reg = cmap.input_register(name)
        words[reg.address : reg.address + reg.width] = reg.encode(value)
    return words[: count if count is not None else cmap.input_count]


def status_block(cls: str, **values: float) -> list[int]:
    return registers(cls, COMMON_INPUTS, **values)


def decoder(cls: str = "fire", device: str = "fire-b-3", address: int = 4) -> DeviceDecoder:
    info = DeviceInfo(device, cls, location="Block B, 3rd floor corridor", bus="riser-b",
                      address=address)
    return DeviceDecoder(GW, info)


def of_kind(messages: list[Message], kind: str) -> list[Message]:
    return [m for m in messages if m.kind == kind]


# --------------------------------------------------------------------------- telemetry

def test_telemetry_carries_a_fire_detectors_readings_with_units_and_no_raw_adc_counts() -> None:
    dec = decoder()
    words = registers("fire", smoke=1.25, temperature=-3.5, heat_rise_rate=0.4, fire_state=1,
                      smoke_raw=1234, heat_raw=2000)
    dec.update(words, T0)
    msg = dec.telemetry(words, T0)
    assert msg.topic == f"edgefleet/v1/{GW}/fire-b-3/telemetry"
    assert (msg.kind, msg.device, msg.retain) == ("telemetry", "fire-b-3", False)
    body = msg.body
    assert (body["v"], body["device"], body["class"]) == (1, "fire-b-3", "fire")
    assert body["ts"] == "2026-11-23T05:00:00.123Z"
    assert body["values"] == {"smoke": 1.25, "temperature": -3.5, "heat_rise_rate": 0.4,
                              "fire_state": 1.0}
    assert body["units"] == {"smoke": "%/m", "temperature": "°C", "heat_rise_rate": "°C/min"}
    assert "seq" not in body  # the outbox assigns it when it stores the message


@pytest.mark.parametrize("cls", sorted(MAPS.classes))
def test_telemetry_of_every_class_is_its_class_block_without_counts(cls: str) -> None:
    cmap = MAPS.classes[cls]
    words = registers(cls)
    msg = decoder(cls, device=f"{cls}-1").telemetry(words, T0)
    class_regs = cmap.input[len(MAPS.common_input):]
    assert set(msg.body["values"]) == {r.name for r in class_regs if r.unit != "counts"}
    assert set(msg.body["units"]) == {r.name for r in class_regs if r.unit not in ("", "counts")}
    assert not set(msg.body["values"]) & {r.name for r in MAPS.common_input}


def test_telemetry_from_a_short_block_leaves_out_registers_it_does_not_have() -> None:
    words = registers("fire")[:18]  # smoke and temperature only
    msg = decoder().telemetry(words, T0)
    assert set(msg.body["values"]) == {"smoke", "temperature"}


def test_timestamps_are_rfc3339_utc_whatever_the_zone_of_the_clock() -> None:
    local = T0.astimezone(timezone(timedelta(hours=7)))  # Asia/Ho_Chi_Minh
    msg = decoder().telemetry(registers("fire"), local)
    assert msg.body["ts"] == "2026-11-23T05:00:00.123Z"


# --------------------------------------------------------------------------- alarms

def test_smoke_in_the_corridor_raises_one_alarm_with_a_stable_id() -> None:
    dec = decoder()
    dec.update(status_block("fire"), T0)
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    raised = dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0)
    alarms = of_kind(raised, "alarm")
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm.topic == f"edgefleet/v1/{GW}/fire-b-3/alarm"
    assert (alarm.device, alarm.retain) == ("fire-b-3", False)
    assert alarm.body["alarm_id"] == "fire-b-3:smoke:7:41"  # <device>:<type>:<boot>:<alarm_seq>
    assert alarm.body["state"] == "raised"
    assert (alarm.body["type"], alarm.body["severity"]) == ("smoke", "critical")
    assert alarm.body["location"] == "Block B, 3rd floor corridor"
    assert dec.snapshot() == {"smoke": "fire-b-3:smoke:7:41"}


def test_an_alarm_that_stays_on_is_not_raised_again() -> None:
    dec = decoder()
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    first = dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0)
    assert len(of_kind(first, "alarm")) == 1
    # the node keeps counting uptime and frames: not an edge, not a state change
    again = dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=41, uptime=3700,
                                    frames_ok=99), T0 + timedelta(seconds=1))
    assert again == []


def test_the_clear_carries_the_id_of_the_raise() -> None:
    dec = decoder()
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    raised = of_kind(dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0),
                     "alarm")
    cleared = of_kind(dec.update(status_block("fire", alarm_bits=0, alarm_seq=41), T0),
                      "alarm")
    assert len(cleared) == 1
    assert cleared[0].body["state"] == "cleared"
    assert cleared[0].body["alarm_id"] == raised[0].body["alarm_id"] == "fire-b-3:smoke:7:41"
    assert dec.snapshot() == {}
    assert dec.update(status_block("fire", alarm_bits=0, alarm_seq=41), T0) == []


def test_a_second_fire_after_the_first_cleared_gets_a_new_id() -> None:
    dec = decoder()
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0)
    dec.update(status_block("fire", alarm_bits=0, alarm_seq=41), T0)
    again = of_kind(dec.update(status_block("fire", alarm_bits=smoke, alarm_seq=42), T0), "alarm")
    assert [m.body["alarm_id"] for m in again] == ["fire-b-3:smoke:7:42"]


def test_smoke_and_heat_together_are_two_alarms_each_cleared_on_its_own() -> None:
    dec = decoder()
    bits = MAPS.classes["fire"].alarm_bits
    both = dec.update(status_block("fire", alarm_bits=mask(bits, "smoke", "heat_fixed"),
                                   alarm_seq=43), T0)
    ids = {m.body["type"]: m.body["alarm_id"] for m in of_kind(both, "alarm")}
    assert ids == {"smoke": "fire-b-3:smoke:7:43", "heat_fixed": "fire-b-3:heat_fixed:7:43"}
    heat_only = dec.update(status_block("fire", alarm_bits=mask(bits, "heat_fixed"),
                                        alarm_seq=43), T0)
    assert [(m.body["type"], m.body["state"], m.body["alarm_id"])
            for m in of_kind(heat_only, "alarm")] == [("smoke", "cleared", ids["smoke"])]


def test_an_alarm_active_before_a_gateway_restart_is_cleared_with_its_saved_id() -> None:
    before = decoder()
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    before.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0)
    after = decoder()
    after.active = before.snapshot()  # what the service persists in alarms.json
    still = after.update(status_block("fire", alarm_bits=smoke, alarm_seq=41), T0)
    assert of_kind(still, "alarm") == []
    cleared = of_kind(after.update(status_block("fire"), T0), "alarm")
    assert [m.body["alarm_id"] for m in cleared] == ["fire-b-3:smoke:7:41"]


def test_flood_stages_carry_their_own_severities() -> None:
    dec = decoder("flood", device="flood-2", address=2)
    bits = MAPS.classes["flood"].alarm_bits
    out = of_kind(dec.update(status_block("flood", alarm_bits=mask(bits, "stage1", "stage2"),
                                          alarm_seq=5), T0), "alarm")
    assert {m.body["type"]: m.body["severity"] for m in out} == {"stage1": "warning",
                                                                 "stage2": "major"}


# --------------------------------------------------------------------------- retained state

def test_the_first_answer_publishes_a_retained_online_state() -> None:
    dec = decoder()
    out = dec.update(status_block("fire"), T0)
    assert len(out) == 1
    state = out[0]
    assert state.topic == f"edgefleet/v1/{GW}/fire-b-3/state"
    assert (state.kind, state.device, state.retain) == ("state", "fire-b-3", True)
    body = state.body
    assert body["online"] is True
    assert (body["firmware"], body["faults"], body["status"]) == ("1.2.3", [], [])
    assert (body["boot_count"], body["bus"], body["address"]) == (7, "riser-b", 4)
    assert "reason" not in body
    assert dec.online is True


def test_counters_and_uptime_do_not_republish_the_state() -> None:
    dec = decoder()
    dec.update(status_block("fire"), T0)
    assert dec.update(status_block("fire", uptime=3601, frames_ok=12, crc_errors=1,
                                   sensor_errors=3), T0) == []


@pytest.mark.parametrize(("change", "field", "expected"), [
    ({"fault_bits": 4}, "faults", ["heat_open"]),
    ({"status": 1 << 3}, "status", ["trial"]),
    ({"fw_minor": 3}, "firmware", "1.3.3"),
    ({"boot_count": 8}, "boot_count", 8),
])
def test_state_is_republished_when_faults_status_firmware_or_boot_change(
        change: dict[str, float], field: str, expected: object) -> None:
    dec = decoder()
    dec.update(status_block("fire"), T0)
    out = dec.update(status_block("fire", **change), T0)
    states = of_kind(out, "state")
    assert len(states) == 1 and states[0].retain
    assert states[0].body[field] == expected
    assert dec.update(status_block("fire", **change), T0) == []  # and only once


def test_a_silent_node_is_reported_offline_once_and_online_again_when_it_answers() -> None:
    dec = decoder()
    dec.update(status_block("fire"), T0)
    out = dec.offline(T0, "no response from address 4")
    assert len(out) == 1
    body = out[0].body
    assert out[0].retain and out[0].kind == "state"
    assert body["online"] is False
    assert body["reason"] == "no response from address 4"
    assert dec.online is False
    assert dec.offline(T0 + timedelta(seconds=30), "no response from address 4") == []
    back = dec.update(status_block("fire"), T0 + timedelta(seconds=60))
    assert [m.body["online"] for m in of_kind(back, "state")] == [True]


def test_a_node_that_never_answered_is_still_reported_offline() -> None:
    out = decoder().offline(T0, "no response")
    assert [(m.body["online"], m.body["firmware"]) for m in out] == [(False, None)]


# --------------------------------------------------------------------------- wrong node

def test_a_flood_gauge_at_a_fire_detectors_address_is_refused_by_name() -> None:
    dec = decoder("fire", device="fire-b-3", address=4)
    with pytest.raises(ValueError, match=r"fire-b-3.*address 4.*class 2"):
        dec.update(status_block("flood"), T0)
    assert dec.values == {}  # nothing of the stranger is kept
    assert dec.online is None


# --------------------------------------------------------------------------- the fast path

def alarm_word(block: list[int]) -> list[int]:
    return block[ALARM_WORD_START : ALARM_WORD_START + ALARM_WORD_COUNT]


def test_before_any_status_read_the_alarm_word_always_asks_for_the_block() -> None:
    assert decoder().alarm_word_changed(alarm_word(status_block("fire")))


def test_alarm_word_changes_on_status_alarm_or_fault_bits_only() -> None:
    dec = decoder()
    dec.update(status_block("fire"), T0)
    smoke = mask(MAPS.classes["fire"].alarm_bits, "smoke")
    assert not dec.alarm_word_changed(alarm_word(status_block("fire")))
    assert not dec.alarm_word_changed(alarm_word(status_block("fire", uptime=99999)))
    assert dec.alarm_word_changed(alarm_word(status_block("fire", alarm_bits=smoke)))
    assert dec.alarm_word_changed(alarm_word(status_block("fire", fault_bits=1)))
    assert dec.alarm_word_changed(alarm_word(status_block("fire", status=1)))
