"""Edge rules: what the siren and the pump do on site, with the uplink down.

:class:`gateway.rules.RuleEngine` is fed decoders that have read real register words; its rules
come from TOML through :func:`gateway.config.validate_config`, exactly as on a gateway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import validate_config
from gateway.decode import COMMON_INPUTS, DeviceDecoder, DeviceInfo
from gateway.rules import Action, RuleEngine
from hardware.regmap import load_maps

MAPS = load_maps()
T0 = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)

SITE = """\
[gateway]
id = "gw-rules"

[mqtt]
host = "localhost"
tls = false

[[bus]]
name = "riser"
type = "rtu"
port = "/dev/ttyUSB0"
device = [
  { address = 1, class = "fire", id = "fire-1" },
  { address = 2, class = "fire", id = "fire-2" },
  { address = 10, class = "fire", id = "siren" },
]

[[bus]]
name = "canal"
type = "rtu"
port = "/dev/ttyUSB1"
device = [
  { address = 1, class = "flood", id = "flood-1" },
  { address = 2, class = "flood", id = "flood-2" },
]

[[serial_input]]
name = "panel"
port = "/dev/ttyUSB2"
profile = "generic"
device_id = "panel-b"
"""

ADDRESSES = {"fire-1": 1, "fire-2": 2, "siren": 10, "flood-1": 1, "flood-2": 2}


def engine(rules: str, tmp_path: Path) -> RuleEngine:
    config = validate_config(SITE + "\n" + rules, "rules.toml", tmp_path)
    return RuleEngine(list(config.rule))


def node(device: str) -> DeviceDecoder:
    cls = "flood" if device.startswith("flood") else "fire"
    return DeviceDecoder("gw-rules", DeviceInfo(device, cls, bus="b", address=ADDRESSES[device]))


def read(dec: DeviceDecoder, *, alarms: tuple[str, ...] = (), faults: tuple[str, ...] = (),
         full: bool = False, **values: float) -> DeviceDecoder:
    """Feed the decoder what the node would answer: the status block, or the full map."""
    cmap = dec.cmap
    fields: dict[str, float] = {
        "map_version": MAPS.map_version, "device_class": cmap.class_id, "boot_count": 1,
        "alarm_bits": sum(1 << b.bit for b in cmap.alarm_bits if b.name in alarms),
        "fault_bits": sum(1 << b.bit for b in cmap.fault_bits if b.name in faults),
        **values}
    words = [0] * cmap.input_count
    for name, value in fields.items():
        reg = cmap.input_register(name)
        words[reg.address : reg.address + reg.width] = reg.encode(value)
    dec.update(words if full or values else words[:COMMON_INPUTS], T0)
    return dec


SIREN_ON_FIRE = """
[[rule]]
name = "siren-on-fire"
when = { class = "fire", site_any = true, alarm = "any" }
then = { device = "siren", coil = "output", value = true }
release = "{release}"
"""


# --------------------------------------------------------------------------- class-wide fire

def test_the_first_detector_in_alarm_sounds_the_siren_and_the_second_does_not_again(
        tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto"), tmp_path)
    fire1, fire2 = node("fire-1"), node("fire-2")
    assert rules.evaluate(read(fire1)) == []
    actions = rules.evaluate(read(fire1, alarms=("smoke",)))
    assert actions == [Action("siren-on-fire", "siren", 0, None, True,
                              "fire-1 meets siren-on-fire")]
    assert rules.evaluate(read(fire2, alarms=("heat_fixed",))) == []
    assert rules.evaluate(read(fire1, alarms=("smoke",))) == []  # still on: no second write
    assert rules.fired == 1


def test_auto_release_waits_for_the_last_detector_to_clear(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto"), tmp_path)
    fire1, fire2 = node("fire-1"), node("fire-2")
    rules.evaluate(read(fire1, alarms=("smoke",)))
    rules.evaluate(read(fire2, alarms=("smoke",)))
    assert rules.evaluate(read(fire1)) == []  # fire-2 still in alarm
    released = rules.evaluate(read(fire2))
    assert [(a.device, a.coil, a.value, a.reason) for a in released] == [
        ("siren", 0, False, "siren-on-fire released")]
    assert rules.evaluate(read(fire2)) == []


def test_a_manually_released_siren_stays_on_after_every_detector_clears(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "manual"), tmp_path)
    fire1 = node("fire-1")
    assert len(rules.evaluate(read(fire1, alarms=("smoke",)))) == 1
    assert rules.evaluate(read(fire1)) == []
    assert rules.evaluate(read(fire1)) == []
    # a new fire after the clear is a new decision: the siren is commanded on again
    assert [a.value for a in rules.evaluate(read(fire1, alarms=("heat_rise",)))] == [True]


def test_a_prealarm_alone_does_not_sound_an_any_alarm_siren(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto"), tmp_path)
    assert rules.evaluate(read(node("fire-1"), alarms=("prealarm",))) == []


def test_a_class_rule_ignores_devices_of_other_classes(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto"), tmp_path)
    assert rules.evaluate(read(node("flood-1"), alarms=("stage3",))) == []


def test_a_named_alarm_rule_fires_on_that_alarm_only(tmp_path: Path) -> None:
    rules = engine("""
[[rule]]
when = { device = "fire-1", alarm = "heat_rise" }
then = { device = "siren", coil = 0, value = true }
""", tmp_path)
    fire1 = node("fire-1")
    assert rules.evaluate(read(fire1, alarms=("smoke",))) == []
    assert rules.evaluate(read(node("fire-2"), alarms=("heat_rise",))) == []  # not watched
    assert [a.rule for a in rules.evaluate(read(fire1, alarms=("smoke", "heat_rise")))] == [
        "rule[0]"]  # unnamed rules are named by their index


# --------------------------------------------------------------------------- values

PUMP = """
[[rule]]
name = "pump-on-high-water"
when = { device = "flood-2", value = "level", above = 0.6 }
then = { device = "flood-2", coil = 0, value = true }
"""


def test_water_above_the_mark_starts_the_pump_once_and_stops_it_when_it_falls(
        tmp_path: Path) -> None:
    rules = engine(PUMP, tmp_path)
    gauge = node("flood-2")
    assert rules.evaluate(read(gauge, level=0.6)) == []  # above is strict
    on = rules.evaluate(read(gauge, level=0.72))
    assert [(a.device, a.coil, a.value) for a in on] == [("flood-2", 0, True)]
    assert rules.evaluate(read(gauge, level=0.9)) == []
    off = rules.evaluate(read(gauge, level=0.4))
    assert [(a.coil, a.value) for a in off] == [(0, False)]


def test_a_value_rule_waits_for_a_reading_of_its_register(tmp_path: Path) -> None:
    rules = engine(PUMP, tmp_path)
    assert rules.evaluate(read(node("flood-2"))) == []  # status block only: no level yet


def test_a_below_rule_and_a_window_rule(tmp_path: Path) -> None:
    rules = engine("""
[[rule]]
name = "dead-loop"
when = { device = "flood-1", value = "loop_current", below = 3.6 }
then = { device = "siren", coil = 0, value = true }

[[rule]]
name = "watch-closely"
when = { device = "flood-1", value = "level", above = 0.3, below = 0.6 }
then = { device = "flood-1", register = "sample_period", value = 200 }
""", tmp_path)
    gauge = node("flood-1")
    assert rules.evaluate(read(gauge, loop_current=12.0, level=0.1)) == []
    window = rules.evaluate(read(gauge, loop_current=12.0, level=0.45))
    assert window == [Action("watch-closely", "flood-1", None, "sample_period", 200.0,
                             "flood-1 meets watch-closely")]
    # leaving the window releases nothing: auto release only puts back coils
    assert rules.evaluate(read(gauge, loop_current=12.0, level=0.7)) == []
    dead = rules.evaluate(read(gauge, loop_current=2.1, level=0.0))
    assert [(a.rule, a.device, a.value) for a in dead] == [("dead-loop", "siren", True)]


# --------------------------------------------------------------------------- faults

def test_fault_rules_any_and_named(tmp_path: Path) -> None:
    rules = engine("""
[[rule]]
name = "any-fault"
when = { class = "fire", site_any = true, fault = "any" }
then = { device = "siren", coil = 0, value = true }

[[rule]]
name = "heat-open"
when = { device = "fire-2", fault = "heat_open" }
then = { device = "fire-2", register = "heat_fixed", value = 54 }
""", tmp_path)
    fire2 = node("fire-2")
    assert rules.evaluate(read(fire2)) == []
    assert [a.rule for a in rules.evaluate(read(fire2, faults=("smoke_open",)))] == ["any-fault"]
    assert [a.rule for a in rules.evaluate(read(fire2, faults=("smoke_open", "heat_open")))] \
        == ["heat-open"]
    assert [(a.rule, a.value) for a in rules.evaluate(read(fire2))] == [("any-fault", False)]


# --------------------------------------------------------------------------- stale data

def test_no_decision_is_taken_on_an_offline_node(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto") + PUMP, tmp_path)
    fire1 = read(node("fire-1"), alarms=("smoke",))
    fire1.online = False
    gauge = read(node("flood-2"), level=0.9)
    gauge.online = False
    assert rules.evaluate(fire1) == []
    assert rules.evaluate(gauge) == []
    assert rules.fired == 0
    fire1.online = True  # it answers again, still in alarm
    assert [a.value for a in rules.evaluate(fire1)] == [True]


# --------------------------------------------------------------------------- panel events

PANEL = """
[[rule]]
name = "siren-on-panel-fire"
when = { device = "panel-b", alarm = "fire" }
then = { device = "siren", coil = "output", value = true }
release = "manual"

[[rule]]
name = "panel-anything"
when = { device = "panel-b", alarm = "any" }
then = { device = "fire-1", register = "sample_period", value = 100 }
"""


def test_a_panel_fire_event_sounds_the_siren(tmp_path: Path) -> None:
    rules = engine(PANEL, tmp_path)
    actions = rules.event("panel-b", "fire")
    assert actions == [
        Action("siren-on-panel-fire", "siren", 0, None, True, "panel-b reported fire"),
        Action("panel-anything", "fire-1", None, "sample_period", 100.0,
               "panel-b reported fire")]
    assert rules.fired == 2


@pytest.mark.parametrize(("device", "kind", "fired"), [
    ("panel-b", "prealarm", ["panel-anything"]),
    ("panel-b", "supervisory", ["panel-anything"]),
    ("panel-c", "fire", []),
])
def test_panel_events_match_their_panel_and_kind(tmp_path: Path, device: str, kind: str,
                                                 fired: list[str]) -> None:
    rules = engine(PANEL, tmp_path)
    assert [a.rule for a in rules.event(device, kind)] == fired


def test_panel_events_do_not_trigger_modbus_rules(tmp_path: Path) -> None:
    rules = engine(SIREN_ON_FIRE.replace("{release}", "auto"), tmp_path)
    assert rules.event("panel-b", "fire") == []



def test_a_panel_fault_rule_fires_on_a_panel_fault_event(tmp_path: Path) -> None:
    rules = engine("""
[[rule]]
name = "panel fault starts the standby siren"
when = { device = "panel-b", fault = "any" }
then = { device = "siren", coil = 0, value = true }
""", tmp_path)
    assert [a.device for a in rules.event("panel-b", "fault")] == ["siren"]
    assert rules.event("panel-b", "fire") == []
