"""Device commands through the real broker: what the fleet sends, what it refuses before
sending, who may send, and how the gateway's answer is recorded (and a forged one is not).
The API is fleet.control's: ``{"action", "body"}`` in, the command's row (``state`` pending ->
sent -> ok/failed) out; the ingest coordinator publishes the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from contracts.mqtt import ack_topic
from tests.gateway.mosquitto import Subscriber
from tests.web.conftest import open_page
from tests.web.stack import FleetStack


def _post(stack: FleetStack, user: str, device: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{stack.url}/api/v1/devices/{stack.device_ids[device]}/commands",
                      json=body, headers={"Authorization": f"Bearer {stack.token(user)}"})


def test_a_threshold_outside_its_register_range_is_refused_before_it_leaves_the_fleet(
        stack: FleetStack) -> None:
    with Subscriber(stack.broker, "edgefleet/v1/gw-bt/cmd/#") as sub:
        r = _post(stack, "admin", "fire-3", {"action": "write", "body": {
            "register": "smoke_alarm", "value": 99}})
        assert r.status_code == 422 and "0.5–20" in r.json()["detail"]
        r = _post(stack, "admin", "fire-3", {"action": "write", "body": {
            "register": "no_such", "value": 1}})
        assert r.status_code == 422
        # A command that does leave, to prove the subscriber would have seen the others.
        assert _post(stack, "admin", "fire-3", {"action": "reset"}).status_code == 201
        sub.wait_for(lambda ms: len(ms) >= 1, 5, "the reset command")
        assert [m.topic for m in sub.messages] == ["edgefleet/v1/gw-bt/cmd/fire-3/reset"]
    assert len(stack.get("admin", f"/devices/{stack.device_ids['fire-3']}/commands")) == 1


def test_fire_safety_may_reset_but_not_write_and_utility_may_not_reset(
        stack: FleetStack) -> None:
    write = {"action": "write", "body": {"register": "smoke_prealarm", "value": 2.5}}
    assert _post(stack, "pccc", "fire-1", write).status_code == 403
    assert _post(stack, "capnuoc", "water-1", {"action": "reset"}).status_code == 403
    assert _post(stack, "pccc", "fire-1", {"action": "reset"}).status_code == 201
    # Out of the outbox before the next test listens for its own command.
    stack.wait_for("admin", f"/devices/{stack.device_ids['fire-1']}/commands",
                   lambda cs: cs[0]["state"] != "pending")


def test_the_gateways_ack_is_recorded_and_an_ack_from_another_gateway_is_not(
        stack: FleetStack) -> None:
    with Subscriber(stack.broker, "edgefleet/v1/gw-bt/cmd/#") as sub:
        sent = _post(stack, "admin", "fire-2", {"action": "write", "body": {
            "register": "smoke_prealarm", "value": 2.5}})
        assert sent.status_code == 201 and sent.json()["state"] == "pending"
        sub.wait_for(lambda ms: len(ms) >= 1, 5, "the write command")
    command = json.loads(sub.messages[0].payload)
    assert sub.messages[0].topic == "edgefleet/v1/gw-bt/cmd/fire-2/write"
    assert command == {"id": sent.json()["command_id"], "register": "smoke_prealarm",
                       "value": 2.5}
    now = datetime.now(UTC).isoformat()
    # A gateway that did not get the command cannot answer for it ...
    stack.publish(ack_topic("gw-sg"), {"v": 1, "id": command["id"], "ok": False,
                                       "error": "forged", "ts": now})
    # ... the one that did, can.
    stack.publish(ack_topic("gw-bt"), {"v": 1, "id": command["id"], "ok": True, "ts": now})
    path = f"/devices/{stack.device_ids['fire-2']}/commands"
    answered = stack.wait_for("admin", path, lambda cs: cs[0]["state"] in ("ok", "failed"))
    assert answered[0]["state"] == "ok" and answered[0]["error"] == ""
    device_id = stack.device_ids["fire-2"]
    audit = stack.get("admin", f"/audit?entity_type=device&entity_id={device_id}")
    trail = sorted((e["action"], e["actor"]) for e in audit
                   if e["detail"].get("command_id") == command["id"])
    # requested by the user, published once by one ingest replica, answered by its gateway
    assert [a for a, _ in trail] == ["command.ok", "command.requested", "command.sent"]
    assert trail[0][1] == "gateway:gw-bt" and trail[1][1] == "user:admin"
    assert trail[2][1].startswith("replica:")


def test_the_device_page_shows_a_command_and_its_ack_as_they_happen_named_for_what_it_did(
        browser: Any, stack: FleetStack) -> None:
    """Pushed over the live feed, not polled: the page did not send this command (a colleague
    did, from another desk), so it has no reason to look again unless the fleet tells it."""
    device = stack.device_ids["air-1"]
    page = open_page(browser, stack, user="admin", path=f"#/device/{device}")
    page.wait_for_selector("span.live.on")
    page.wait_for_selector(".cmd-log li.muted")  # no command yet
    with Subscriber(stack.broker, "edgefleet/v1/gw-bt/cmd/#") as sub:
        sent = _post(stack, "capnuoc", "air-1", {"action": "repoll"})
        assert sent.status_code == 201, sent.text
        sub.wait_for(lambda ms: len(ms) >= 1, 5, "the repoll command")
    page.locator(".cmd-log .chip.cmd-pending").wait_for(timeout=5_000)
    stack.publish(ack_topic("gw-bt"), {"v": 1, "id": sent.json()["command_id"], "ok": True,
                                       "ts": datetime.now(UTC).isoformat()})
    page.locator(".cmd-log .chip.cmd-ok").wait_for(timeout=5_000)
    assert page.locator(".cmd-log li").count() == 1
    # Each command is named for what it did: a repoll is not a threshold write.
    assert "Read the device now" in page.locator(".cmd-log li").inner_text()
    assert _post(stack, "admin", "air-1", {"action": "reboot"}).status_code == 201
    page.wait_for_function("document.querySelectorAll('.cmd-log li').length === 2")
    log = page.locator(".cmd-log").inner_text()
    assert "Reboot the device" in log
    assert "undefined" not in log and "Write threshold" not in log
    page.context.close()
