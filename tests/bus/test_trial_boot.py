"""Trial images and the slot record, as the field sees them: a new image that raises at import
(a module missing from the build), an empty slot, a damaged /slots.json, a damaged threshold
record. The picker (firmware/main.py) must always end with a node that answers, and a gateway
must be able to tell from the status word that the update failed."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import pytest

from hardware.sim.simbus import NodeProcess, SimBus
from tests.bus.conftest import MAPS, Bus, bits
from tests.conftest import wait_for

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
MAX_TRIES = 3  # firmware/main.py


def record(data: object) -> bytes:
    """A flash record as the firmware writes it: CRC-32 in hex, newline, JSON body."""
    body = json.dumps(data).encode()
    return b"%08x\n" % zlib.crc32(body) + body


def read_record(path: Path) -> dict[str, object]:
    crc, _, body = path.read_bytes().partition(b"\n")
    assert crc == b"%08x" % zlib.crc32(body), "the record's CRC line does not match its body"
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


def plant_trial(sim: SimBus, first_line: str | None) -> None:
    """Slot b gets the application as a trial image; first_line breaks its node module,
    None leaves the slot empty (a copy that never happened)."""
    root = sim.nodes[0].root
    slot = root / "b" / "app"
    slot.mkdir(parents=True)
    if first_line is not None:
        shutil.rmtree(slot)
        shutil.copytree(FIRMWARE / "app", slot)
        node_py = slot / "node.py"
        node_py.write_text(first_line + "\n" + node_py.read_text())
    (root / "slots.json").write_bytes(record(
        {"active": "b", "previous": "a", "trial": True, "tries": 0}))


def status_of(values: dict[str, float]) -> set[str]:
    return bits(values["status"], MAPS.status_bits)


def assert_rolled_back(node: NodeProcess, values: object) -> None:
    """The node answers on its old slot and says so: the roll-back bit, no trial bit, and the
    slot record with slot a active, b as the previous one and the roll-back flag set."""
    assert isinstance(values, dict), node.events.lines[-8:]
    status = status_of(values)
    assert "rolled_back" in status and "trial" not in status, status
    slots = read_record(node.root / "slots.json")
    assert (slots["active"], slots["previous"], slots["rolled_back"]) == ("a", "b", True)
    assert not slots["trial"]


def test_a_trial_image_that_raises_at_import_rolls_back_and_says_so(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus(
        [(1, "fire")], wait_ready=False,
        prepare=lambda sim: plant_trial(sim, 'raise ImportError("no module named app.lost")'))
    node = bus.sim.node(1)
    values = wait_for(lambda: bus.master.try_values(1), 40, what="the node on its old image")
    assert_rolled_back(node, values)
    # every trial boot raised and reset the board: the counter ran out, the old slot runs
    assert node.events.restarts >= MAX_TRIES, node.events.lines[-8:]
    assert any("app.lost" in line for line in node.events.lines)


def test_an_empty_trial_slot_falls_back_at_once(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "flood")], wait_ready=False,
                         prepare=lambda sim: plant_trial(sim, None))
    values = wait_for(lambda: bus.master.try_values(1), 15, what="the node on slot a")
    assert isinstance(values, dict)
    assert "rolled_back" in status_of(values)
    assert bus.sim.node(1).events.restarts == 0  # no boot was wasted on the empty slot


def test_a_trial_image_reports_trial_until_the_gateway_confirms_it(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "water")], wait_ready=False,
                         prepare=lambda sim: plant_trial(sim, "# build 2"))
    values = wait_for(lambda: bus.master.try_values(1), 15, what="the node on its trial image")
    assert isinstance(values, dict)
    assert "trial" in status_of(values)
    bus.master.write(1, 0, MAPS.commands["confirm_image"])
    status = status_of(bus.master.values(1))
    assert "trial" not in status and "rolled_back" not in status, status
    assert read_record(bus.sim.node(1).root / "slots.json")["trial"] is False


def test_an_image_staged_for_the_next_boot_shows_as_ota(start_bus) -> None:  # type: ignore[no-untyped-def]
    bus: Bus = start_bus([(1, "fire")])
    root = bus.sim.node(1).root
    shutil.copytree(FIRMWARE / "app", root / "b" / "app")
    (root / "slots.json").write_bytes(record({"active": "a", "pending": "b"}))
    bus.master.write(1, 0, MAPS.commands["reset"])  # any command re-reads the slot record
    assert "ota" in status_of(bus.master.values(1))
    boots = bus.master.values(1)["boot_count"]
    bus.master.write(1, 0, MAPS.commands["reboot"])
    values = wait_for(lambda: (v := bus.master.try_values(1)) and v["boot_count"] > boots and v,
                      15, what="the reboot into the staged image")
    assert isinstance(values, dict)
    status = status_of(values)
    assert "trial" in status and "ota" not in status, status


@pytest.mark.parametrize("damage", [
    b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\n{}",                       # a CRC line that is not text
    record(["b", "a"]),                                          # a right CRC over a list
    record({"active": 2, "trial": "yes", "tries": "many"}),      # wrong types
    record({"active": "b", "previous": "a"})[:-3],               # a torn write (bad CRC)
    b'["b", "a"]',                                              # the old plain format: a list
    b'{"active": 2, "trial": "yes", "tries": "many"}',           # ... with wrong types
], ids=["not-utf8", "list", "wrong-types", "torn", "plain-list", "plain-wrong-types"])
def test_a_damaged_slot_record_never_stops_the_boot(start_bus, damage: bytes) -> None:  # type: ignore[no-untyped-def]
    def plant(sim: SimBus) -> None:
        (sim.nodes[0].root / "slots.json").write_bytes(damage)

    bus: Bus = start_bus([(1, "air")], wait_ready=False, prepare=plant)
    values = wait_for(lambda: bus.master.try_values(1), 15, what="the node on slot a")
    assert isinstance(values, dict)
    assert bus.sim.node(1).events.restarts == 0, bus.sim.node(1).events.lines[-8:]


def test_a_threshold_record_with_a_binary_crc_line_boots_on_defaults(start_bus) -> None:  # type: ignore[no-untyped-def]
    def plant(sim: SimBus) -> None:
        (sim.nodes[0].root / "data" / "config.json").write_bytes(
            b"\x9c\xff\x00\xe9\x80\x81\x82\x83\n" + json.dumps(
                {"class": "fire", "holding": {"smoke_alarm": 350}}).encode())

    bus: Bus = start_bus([(1, "fire")], wait_ready=False, prepare=plant)
    values = wait_for(lambda: bus.master.try_values(1), 15, what="the node on defaults")
    assert isinstance(values, dict), bus.sim.node(1).events.lines[-8:]
    assert "config_error" in status_of(values)
    assert bus.master.holdings(1, 16)[0] == 400  # the factory smoke threshold
    assert bus.sim.node(1).events.restarts == 0


def test_a_trial_image_the_gateway_never_confirms_rolls_back_after_its_deadline(start_bus) -> None:  # type: ignore[no-untyped-def]
    # A new image that runs and answers, but nobody confirms it (the gateway is gone): each
    # trial boot ends at its confirm-by time (1 s here, 15 min by default) with a reset, the
    # picker counts the boots and then falls back. (Before the deadline it stayed on trial
    # for as long as it ran.)
    bus: Bus = start_bus([(1, "fire")], wait_ready=False,
                         prepare=lambda sim: plant_trial(sim, "# build 2"),
                         node_options={1: {"trial_confirm_s": 1}})
    node = bus.sim.node(1)
    first = wait_for(lambda: bus.master.try_values(1), 15, what="the node on its trial image")
    assert isinstance(first, dict)
    assert "trial" in status_of(first)
    values = wait_for(lambda: (v := bus.master.try_values(1)) and "rolled_back" in status_of(v)
                      and v, 20, what="the roll-back to the old slot")
    assert_rolled_back(node, values)
    assert node.events.restarts >= MAX_TRIES, node.events.lines[-8:]
    assert node.events.watchdog_resets == 0, node.events.lines[-8:]
    assert sum("trial: not confirmed" in line for line in node.events.lines) >= MAX_TRIES


def test_a_trial_image_whose_loop_hangs_is_reset_by_the_watchdog_and_rolls_back(start_bus) -> None:  # type: ignore[no-untyped-def]
    # The new image boots, then its loop never returns to the duties: nothing feeds the
    # watchdog, which resets the board; after MAX_TRIES such boots the old slot runs.
    def plant(sim: SimBus) -> None:
        plant_trial(sim, "# build 2, its loop hangs")
        node_py = sim.nodes[0].root / "b" / "app" / "node.py"
        node_py.write_text(node_py.read_text() + (
            "\n\ndef _hang(self):\n"
            "    while True:\n"
            "        time.sleep_ms(50)\n\n\n"
            "Node.run = _hang\n"))

    bus: Bus = start_bus([(1, "air")], wait_ready=False, prepare=plant, watchdog_ms=1500)
    node = bus.sim.node(1)
    values = wait_for(lambda: bus.master.try_values(1), 25, what="the node on its old image")
    assert_rolled_back(node, values)
    assert node.events.watchdog_resets >= MAX_TRIES, node.events.lines[-8:]


def test_a_trial_image_in_a_latched_fire_alarm_is_not_reset_at_its_deadline(start_bus) -> None:  # type: ignore[no-untyped-def]
    # The confirm-by time is postponed while the detector reports a fire: a reset would drop
    # the latched alarm and take the detector off the bus. Once the alarm is cleared, the
    # deadline (long passed) resets the board at the next sample. (A trial boot may end at its
    # deadline before the smoke reaches the alarm threshold: the alarm is watched from the
    # boot it latched in.)
    confirm_s = 3
    bus: Bus = start_bus([(1, "fire")], wait_ready=False,
                         prepare=lambda sim: plant_trial(sim, "# build 2"),
                         node_options={1: {"trial_confirm_s": confirm_s}})
    node = bus.sim.node(1)
    bus.feed.apply(1, "ignite", {"growth": 1.0, "smokiness": 20.0})
    latched = wait_for(lambda: (v := bus.master.try_values(1)) and {"latched", "trial"}
                       <= status_of(v) and v, 20, what="a latched alarm on the trial image")
    assert isinstance(latched, dict), node.events.lines[-8:]
    boots = latched["boot_count"]
    bus.feed.apply(1, "extinguish", {"tau_s": 0.0})  # the alarm stays latched meanwhile
    bus.feed.apply(1, "ventilate", {"ach": 600.0})
    deadline_resets = sum("trial: not confirmed" in line for line in node.events.lines)
    on_fire = wait_for(lambda: (v := bus.master.try_values(1)) and v["uptime"] >= confirm_s + 2
                       and v, 15, what="the deadline passing during the alarm")
    assert isinstance(on_fire, dict)
    assert on_fire["boot_count"] == boots, node.events.lines[-8:]
    assert {"latched", "trial"} <= status_of(on_fire)
    assert sum("trial: not confirmed" in line for line in node.events.lines) == deadline_resets
    wait_for(lambda: bus.feed.truth(1)["smoke"] < 3.0, 15, what="a cleared room")
    restarts = node.events.restarts
    bus.master.write(1, 0, MAPS.commands["reset"])  # the operator clears the alarm
    wait_for(lambda: node.events.restarts > restarts, 10, what="the deadline's reset")
    assert any("trial: not confirmed" in line for line in node.events.lines)
