"""The fire panel's alarm state machine, fed with real printer lines through the real profiles."""

from __future__ import annotations

import json

import pytest

from gateway.lineproto import LineParser, PanelEvent, load_profile
from gateway.panel import PanelAlarms

NOTIFIER = {
    "fire": "FIRE ALARM  SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  02:03P 111226 1D012",
    "clr_alm": "CLR ALM     SMOKE(PHOTO)  3RD FLOOR CORRIDOR            Z003  02:07P 111226 1D012",
    "trouble": "TROUBL      SMOKE(PHOTO)  5TH FLOOR LOBBY   OPEN CIRCUIT Z005  02:05P 111226 1D002",
    "clr_tbl": "CLR TBL     SMOKE(PHOTO)  5TH FLOOR LOBBY               Z005  02:09P 111226 1D002",
    "sup": "SUPERVISORY VALVE TAMPER  RISER B                       Z007  02:11P 111226 1M004",
    "clr_sup": "CLR SUP     VALVE TAMPER  RISER B                       Z007  02:12P 111226 1M004",
    "clr_tbl_other": "CLR TBL     SMOKE(PHOTO)  6TH FLOOR               Z006  02:09P 111226 1D003",
    "reset": "SYSTEM RESET                                                  02:10P 111226",
    "ack": "ACKNOWLEDGE                                                   02:04P 111226",
}


def event(name: str) -> PanelEvent:
    (ev,) = LineParser(load_profile("notifier")).feed(NOTIFIER[name].encode() + b"\r\n")
    return ev


def run(lines: list[str], state: dict[str, object] | None = None,
        ) -> tuple[list[tuple[str, str, str | None]], PanelAlarms]:
    panel = PanelAlarms("facp-1", state)  # type: ignore[arg-type]
    out = []
    for name in lines:
        out += [(e.state, e.kind, e.alarm_id) for e in panel.apply(event(name))]
    return out, panel


@pytest.mark.parametrize(("lines", "expected"), [
    # each restore ends the alarm it names, under the id it was raised with
    (["fire", "clr_alm"], [("raised", "fire", "facp-1:fire:003:1D012:1"),
                           ("cleared", "fire", "facp-1:fire:003:1D012:1")]),
    (["trouble", "clr_tbl"], [("raised", "fault", "facp-1:fault:005:1D002:1"),
                              ("cleared", "fault", "facp-1:fault:005:1D002:1")]),
    (["sup", "clr_sup"], [("raised", "supervisory", "facp-1:supervisory:007:1M004:1"),
                          ("cleared", "supervisory", "facp-1:supervisory:007:1M004:1")]),
    # a trouble restore does not end a fire at another place, nor a fire at the same place
    (["fire", "clr_tbl"], [("raised", "fire", "facp-1:fire:003:1D012:1"),
                           ("event", "restore", None)]),
    (["trouble", "clr_tbl_other"], [("raised", "fault", "facp-1:fault:005:1D002:1"),
                                    ("event", "restore", None)]),
    # a re-printed alarm is not a second alarm; a new occurrence gets a new id
    (["fire", "fire", "clr_alm", "fire"], [("raised", "fire", "facp-1:fire:003:1D012:1"),
                                           ("cleared", "fire", "facp-1:fire:003:1D012:1"),
                                           ("raised", "fire", "facp-1:fire:003:1D012:2")]),
    # a system reset ends everything that is active
    (["fire", "trouble", "reset"], [("raised", "fire", "facp-1:fire:003:1D012:1"),
                                    ("raised", "fault", "facp-1:fault:005:1D002:2"),
                                    ("cleared", "fire", "facp-1:fire:003:1D012:1"),
                                    ("cleared", "fault", "facp-1:fault:005:1D002:2")]),
    (["ack"], [("event", "ack", None)]),
    (["reset"], [("event", "reset", None)]),
])
def test_panel_alarm_table(lines: list[str], expected: list[tuple[str, str, str | None]]
                           ) -> None:
    assert run(lines)[0] == expected


def test_a_restore_without_clears_ends_any_kind_at_its_place() -> None:
    fire = event("fire")
    restore = PanelEvent("restore", fire.zone, fire.point, "restored", None, "raw",
                         clears=None)
    panel = PanelAlarms("facp-1")
    panel.apply(fire)
    (edge,) = panel.apply(restore)
    assert (edge.state, edge.kind) == ("cleared", "fire")
    assert not panel.active


def test_alarm_ids_survive_a_restart_through_a_json_snapshot_and_never_repeat() -> None:
    _, panel = run(["fire", "clr_alm", "trouble"])
    saved = json.loads(json.dumps(panel.snapshot()))  # what the service persists
    out, restarted = run(["clr_tbl", "fire"], saved)
    assert out == [("cleared", "fault", "facp-1:fault:005:1D002:2"),
                   ("raised", "fire", "facp-1:fire:003:1D012:3")]
    assert restarted.snapshot() == {"raised": 3,
                                    "active": {"fire:003:1D012": "facp-1:fire:003:1D012:3"}}


def test_alarm_ids_do_not_depend_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    first, _ = run(["fire"])
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    second, _ = run(["fire"])
    assert first == second
