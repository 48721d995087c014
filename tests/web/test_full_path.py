"""The whole path, every part real: a fire detector's MicroPython firmware on a simulated RS-485
bus, the gateway polling it over Modbus RTU and publishing to Mosquitto, the fleet ingesting,
and the dashboard in Chromium. Smoke rises in the room; the alarm must appear on the fire-safety
desk and on a fire-safety phone without a reload, while the ward's water utility, signed in
beside them, neither sees it nor can acknowledge it. Fire safety acknowledges it in the page with
a comment and the audit log says who and when. A technician then writes the detector's
pre-alarm threshold from the device page and the page shows the gateway's confirmation (the
command went fleet → broker → gateway → Modbus write → node, and the ack back)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.web.conftest import PHONE, open_page
from tests.web.stack import FleetStack

# The gateway on this branch may predate the contract's epoch (gw-b adds it; the lead's
# integration branch has it). Without epochs the fleet rightly rejects every payload, so the
# full path cannot be shown: say so as a skip, never as a pass.
_GATEWAY_STAMPS_EPOCHS = "epoch" in Path(__import__("gateway.outbox").outbox.__file__).read_text()
pytestmark = pytest.mark.skipif(not _GATEWAY_STAMPS_EPOCHS,
                                reason="this branch's gateway publishes no epoch (contract v1 "
                                       "needs it): merge the gateway with epochs to run")

GW = "gw-e2e"
DEVICE = "fire-e2e"


class Rig:
    def __init__(self, sim: SimBus, feed: PhysicsFeed, proc: subprocess.Popen[bytes],
                 log: Path, device_id: int) -> None:
        self.sim, self.feed, self.proc, self.log, self.device_id = sim, feed, proc, log, device_id


@pytest.fixture
def rig(stack: FleetStack, tmp_path: Path) -> Iterator[Rig]:
    token = stack.token("admin")
    auth = {"Authorization": f"Bearer {token}"}
    site = next(s for s in httpx.get(f"{stack.url}/api/v1/sites", headers=auth).json()
                if s["name"] == "Chợ Bến Thành")
    gw = httpx.post(f"{stack.url}/api/v1/gateways", headers=auth,
                    json={"key": GW, "name": "Gateway E2E", "site_id": site["id"]})
    gw.raise_for_status()
    dev = httpx.post(f"{stack.url}/api/v1/devices", headers=auth, json={
        "gateway_id": gw.json()["id"], "key": DEVICE, "device_class": "fire",
        "name": "Đầu báo khói hành lang", "address": 1, "site_id": site["id"]})
    dev.raise_for_status()

    sim = SimBus([(1, "fire")])
    feed = attach_physics(sim)
    sim.start()
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[gateway]
id = "{GW}"
site = "Chợ Bến Thành"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "{stack.broker.host}"
port = {stack.broker.port}
tls = false

[[bus]]
name = "corridor"
type = "rtu"
port = "{sim.master_path}"
timeout_s = 0.3

[[bus.device]]
address = 1
class = "fire"
id = "{DEVICE}"
location = "Hành lang tầng 1"
""")
    log = tmp_path / "gateway.log"
    with open(log, "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run",
                                 str(config)], stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        yield Rig(sim, feed, proc, log, dev.json()["id"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sim.stop()


def _row(page: Any, alarm_id: int) -> Any:
    return page.locator(f"article.alarm[data-alarm-id='{alarm_id}']")


def _into_view(page: Any, row: Any) -> None:
    """Open the site's folded group if ``row`` sits in it (a later, more urgent alarm leads)."""
    if not row.is_visible():
        summary = page.locator("details.storm:not([open])", has=row).locator("> summary")
        if summary.count():
            summary.click()


def test_smoke_in_the_corridor_is_acknowledged_by_fire_safety_unseen_by_utility_and_a_threshold_write_is_confirmed(  # noqa: E501
        browser: Any, stack: FleetStack, rig: Rig) -> None:
    desk = open_page(browser, stack, user="pccc")
    desk.wait_for_selector("span.live.on")
    # The detector is heard: its state reaches the registry through the whole chain.
    stack.wait_for("admin", f"/devices/{rig.device_id}",
                   lambda d: d["connectivity"] == "online", timeout=30)

    started = datetime.now(UTC)
    rig.feed.apply(1, "ignite", {"growth": 1.0})
    # While the room fills with smoke, two more sign in beside the desk: the ward's water
    # utility, and fire safety on a phone.
    utility = open_page(browser, stack, user="capnuoc")
    phone = open_page(browser, stack, user="pccc", viewport=PHONE)
    for page in (utility, phone):
        page.wait_for_selector("span.live.on")
    corridor = f"article.alarm:has(a[href='#/device/{rig.device_id}'])"
    desk.locator(corridor).first.wait_for(timeout=60_000)
    assert "Hành lang tầng 1" in desk.locator(corridor).first.inner_text()
    # The pre-alarm comes first; the smoke alarm proper is the one fire safety answers.
    raised = stack.wait_for("admin", "/alarms?class=fire", lambda rows: any(
        r["device_id"] == rig.device_id and r["type"] == "smoke" for r in rows), timeout=30)
    alarm_id = next(r["id"] for r in raised
                    if r["device_id"] == rig.device_id and r["type"] == "smoke")
    row = _row(desk, alarm_id)
    row.wait_for(timeout=10_000)

    # The phone shows the same alarm, and fits the screen (its acknowledgement, below, is live).
    on_phone = _row(phone, alarm_id)
    on_phone.wait_for(timeout=10_000)
    assert "Hành lang tầng 1" in on_phone.inner_text()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # A water alarm in the utility user's ward proves the utility page is live ...
    water_key = stack.alarm("gw-bt", "water-1", "water", "pressure_low", severity="warning")
    water = stack.wait_for("admin", "/alarms?class=water",
                           lambda rows: any(r["alarm_key"] == water_key for r in rows))
    _row(utility, next(r["id"] for r in water if r["alarm_key"] == water_key)).wait_for(
        state="attached", timeout=10_000)
    # ... and still the corridor's fire alarm is not on it, nor can it be acknowledged from it.
    assert _row(utility, alarm_id).count() == 0 and utility.locator(corridor).count() == 0
    assert "Hành lang tầng 1" not in utility.inner_text("main")
    refused = utility.evaluate(
        """async (id) => (await fetch(`/api/v1/alarms/${id}/acknowledge`, {method: "POST",
            headers: {"Content-Type": "application/json",
                      Authorization: `Bearer ${sessionStorage.getItem("edgefleet.token")}`},
            body: JSON.stringify({comment: "not mine"})})).status""", alarm_id)
    assert refused in (403, 404)
    assert stack.get("admin", f"/alarms/{alarm_id}")["state"] == "raised"

    # Fire safety acknowledges it in the page, with a comment; the phone follows, live. The
    # board keeps moving while the fire grows (heat alarms, a site group folding), so bring the
    # row into view and act again if a live re-draw took it away mid-way.
    for _ in range(5):
        _into_view(desk, row)
        try:
            row.locator("input[name=comment]").fill("Đội PCCC phường đang đến", timeout=2_000)
            row.locator("form.ack button[type=submit]").click(timeout=2_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError("the smoke alarm's acknowledge form never stayed in view")
    acked = f"article.alarm.st-acknowledged[data-alarm-id='{alarm_id}']"
    for page in (desk, phone):
        page.wait_for_selector(acked, state="attached")

    # The audit log says who and when; the page's history shows the same.
    audit = stack.get("admin", f"/audit?entity_type=alarm&entity_id={alarm_id}")
    ack = [e for e in audit if e["action"] == "alarm.acknowledged"]
    assert len(ack) == 1 and ack[0]["actor"] == "user:pccc"
    assert ack[0]["detail"]["comment"] == "Đội PCCC phường đang đến"
    assert started <= datetime.fromisoformat(ack[0]["at"]) <= datetime.now(UTC)
    acked_row = _row(desk, alarm_id)
    # A live re-draw also closes an open history: open it again until it has been read.
    entry = acked_row.locator("ol.history li", has_text="user:pccc")
    for _ in range(10):
        _into_view(desk, acked_row)
        try:
            if acked_row.locator("details.history[open]").count() == 0:
                acked_row.locator("details.history summary").click(timeout=2_000)
            entry.wait_for(timeout=2_000)
            text = entry.inner_text(timeout=1_000)
            break
        except PlaywrightTimeout:
            continue
    else:
        raise AssertionError("the acknowledgement never showed in the alarm's history")
    assert "Đội PCCC phường đang đến" in text

    tech = open_page(browser, stack, user="admin", path=f"#/device/{rig.device_id}")
    tech.wait_for_selector("form.cmd-write")
    tech.select_option("#cmd-register", "smoke_prealarm")
    tech.fill("#cmd-value", "3")
    tech.click("form.cmd-write button[type=submit]")
    tech.locator(".cmd-log .chip.cmd-ok").first.wait_for(timeout=20_000)
    commands = stack.get("admin", f"/devices/{rig.device_id}/commands")
    assert commands[0]["state"] == "ok" and commands[0]["error"] == ""
    assert commands[0]["body"] == {"register": "smoke_prealarm", "value": 3}
    # ok is the gateway's word that the node answered the Modbus write (an exception reply
    # or a timeout comes back as ok=false with the reason).
    for page in (desk, utility, phone, tech):
        page.context.close()
