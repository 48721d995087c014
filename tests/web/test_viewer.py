"""The viewer role in a real browser: a ward's read-only desk (here Phường Sài Gòn) sees its
ward's alarms and devices live, and nothing else; it is offered no acknowledge form and no
command, and the fleet refuses the acknowledgement and the command a viewer sends anyway (403:
the alarm and the device are in its area, so hiding them would be wrong; acting on them is not
its role)."""

from __future__ import annotations

import re
from typing import Any

from tests.web.conftest import open_page
from tests.web.stack import FleetStack

#: A request made from the page with the page's own session, as a viewer's hand-made request is.
FETCH = """async ([path, body]) => {
  const r = await fetch(`/api/v1${path}`, {method: "POST", headers: {
    "Content-Type": "application/json",
    Authorization: `Bearer ${sessionStorage.getItem("edgefleet.token")}`},
    body: JSON.stringify(body)});
  return [r.status, (await r.json().catch(() => ({}))).detail || ""];
}"""


def _alarm_id(stack: FleetStack, key: str) -> int:
    rows = stack.wait_for("admin", "/alarms?open_only=true",
                          lambda rs: any(r["alarm_key"] == key for r in rs))
    return next(r["id"] for r in rows if r["alarm_key"] == key)


def test_a_viewer_sees_its_ward_live_and_is_offered_no_acknowledge_or_command(
        browser: Any, stack: FleetStack) -> None:
    viewer = open_page(browser, stack, user="xem")
    viewer.wait_for_selector("span.live.on")
    # One fire in the viewer's ward (the theatre) and one in the next ward (the market).
    mine = _alarm_id(stack, stack.alarm("gw-sg", "fire-4", "fire", "heat_rise",
                                        location="Sân khấu chính"))
    other = _alarm_id(stack, stack.alarm("gw-bt", "fire-3", "fire", "heat_fixed",
                                         location="Bếp trường"))
    # And a flood in the viewer's ward after both: the feed is ordered, so once this one is on
    # the page, the market's fire would be too had the feed offered it to the viewer.
    last = _alarm_id(stack, stack.alarm("gw-sg", "flood-1", "flood", "stage2",
                                        severity="major", location="Bến Bạch Đằng"))
    row = viewer.locator(f"article.alarm[data-alarm-id='{mine}']")
    row.wait_for(timeout=10_000)
    assert "Sân khấu chính" in row.inner_text()
    viewer.wait_for_selector(f"article.alarm[data-alarm-id='{last}']", state="attached",
                             timeout=10_000)
    assert viewer.locator(f"article.alarm[data-alarm-id='{other}']").count() == 0
    assert "Bếp trường" not in viewer.inner_text("main")
    # The escalation deadline is on the row and counts down, read-only desk or not.
    deadline = f"article.alarm[data-alarm-id='{mine}'] span.deadline"
    shown = viewer.inner_text(deadline)
    assert re.fullmatch(r"Escalates in \d+:\d\d", shown), shown
    viewer.wait_for_function("([sel, was]) => document.querySelector(sel).textContent !== was",
                             arg=[deadline, shown], timeout=5_000)
    # Read-only: no acknowledge form, no comment field, no resolve button on the board.
    assert row.locator("form.ack").count() == 0
    assert viewer.locator("form.ack, input[name=comment]").count() == 0
    assert viewer.locator("article.alarm button").count() == 0

    # The device page shows the device and says commands are not the viewer's to send.
    viewer.goto(f"{stack.url}/ui/#/device/{stack.device_ids['fire-4']}")
    viewer.wait_for_selector("section.commands")
    assert "Đầu báo khói sân khấu" in viewer.inner_text("section.device h2")
    commands = viewer.locator("section.commands")
    assert commands.locator("form, button, select, input").count() == 0
    assert "Your role may not send commands." in commands.inner_text()
    # A device of another ward is not shown at all.
    viewer.goto(f"{stack.url}/ui/#/device/{stack.device_ids['fire-3']}")
    viewer.wait_for_selector("main p.error")
    assert viewer.locator("section.device").count() == 0

    # What the page does not offer, the fleet refuses when sent by hand: 403 in the area ...
    status, detail = viewer.evaluate(FETCH, [f"/alarms/{mine}/acknowledge",
                                             {"comment": "xem thử"}])
    assert status == 403, detail
    # (Update campaigns other tests ran may queue ``ota`` offers for this device meanwhile:
    # only the actions the viewer tried are compared.)
    def tried() -> list[Any]:
        return [c for c in stack.get("admin", f"/devices/{stack.device_ids['fire-4']}/commands")
                if c["action"] in ("reset", "write", "repoll")]
    before = tried()
    for body in ({"action": "reset", "body": {}},
                 {"action": "write", "body": {"register": "smoke_prealarm", "value": 2.5}},
                 {"action": "repoll", "body": {}}):
        status, detail = viewer.evaluate(
            FETCH, [f"/devices/{stack.device_ids['fire-4']}/commands", body])
        assert status == 403, (body, detail)
    # ... and outside it, the device does not exist for the viewer (404).
    # (Acknowledging is refused by role before any lookup, so it is 403 for any alarm id.)
    status, _ = viewer.evaluate(FETCH, [f"/alarms/{other}/acknowledge", {"comment": "x"}])
    assert status == 403
    status, _ = viewer.evaluate(FETCH, [f"/devices/{stack.device_ids['fire-3']}/commands",
                                        {"action": "reset", "body": {}}])
    assert status == 404
    # Nothing the viewer tried left a trace: still raised, no command queued.
    assert stack.get("admin", f"/alarms/{mine}")["state"] == "raised"
    assert tried() == before
    viewer.context.close()
