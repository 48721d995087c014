"""The whole path, every part real: a fire detector's MicroPython firmware on a simulated RS-485
bus, the gateway polling it over Modbus RTU and publishing to Mosquitto, the fleet ingesting,
and the dashboard in Chromium. Smoke rises in the room; the alarm must appear on the fire-safety
desk without a reload. A technician then writes the detector's pre-alarm threshold from the
device page and the page shows the gateway's confirmation (the command went fleet → broker →
gateway → Modbus write → node, and the ack back)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from tests.web.conftest import open_page
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


def test_smoke_in_the_corridor_reaches_the_board_and_a_threshold_write_is_confirmed(
        browser: Any, stack: FleetStack, rig: Rig) -> None:
    desk = open_page(browser, stack, user="pccc")
    desk.wait_for_selector("span.live.on")
    # The detector is heard: its state reaches the registry through the whole chain.
    stack.wait_for("admin", f"/devices/{rig.device_id}",
                   lambda d: d["connectivity"] == "online", timeout=30)

    rig.feed.apply(1, "ignite", {"growth": 1.0})
    row = desk.locator("article.alarm", has=desk.locator(f"a[href='#/device/{rig.device_id}']"))
    row.first.wait_for(timeout=60_000)
    assert "Hành lang tầng 1" in row.first.inner_text()

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
    for page in (desk, tech):
        page.context.close()
