"""Commands to devices through the gateway's cmd/ topics, on SQLite and PostgreSQL: who may
send what, the payload the gateway receives, and the gateway's ack recorded and shown."""

from __future__ import annotations

import json

from contracts.mqtt import AckPayload, command_topic, parse_topic
from fleet.control import service
from fleet.control.actions import ACTIONS


def test_the_fleet_offers_exactly_the_actions_the_gateway_executes() -> None:
    from gateway.service import COMMANDS

    assert set(ACTIONS) == set(COMMANDS)


def test_a_technician_writes_a_threshold_and_sees_the_gateways_ack(client, world,  # type: ignore[no-untyped-def]
                                                                   fleet_db) -> None:
    device = world.devices["flood-a"]
    r = client.post(f"/api/v1/devices/{device}/commands", headers=world.headers("technician"),
                    json={"action": "write", "body": {"register": "stage2",
                                                      "value": 1.25}})
    assert r.status_code == 201, r.text
    cmd = r.json()
    assert cmd["state"] == "pending"
    with fleet_db.transaction() as s:
        out = service.claim(s, "replica-1")
        assert [o.topic for o in out] == [command_topic("gw-a", "flood-a", "write")]
        topic = parse_topic(out[0].topic)
        assert (topic.gateway, topic.device, topic.action) == ("gw-a", "flood-a", "write")
        assert json.loads(out[0].payload) == {"id": cmd["command_id"],
                                              "register": "stage2", "value": 1.25}
        assert service.mark_sent(s, "replica-1", [o.id for o in out]) == 1
        assert service.claim(s, "replica-1") == []
    ack = AckPayload(id=cmd["command_id"], ok=False, error="value above the register maximum")
    with fleet_db.transaction() as s:
        service.apply_ack(s, "gw-a", ack)
        service.apply_ack(s, "gw-a", AckPayload(id=cmd["command_id"], ok=True))  # late dup
        service.apply_ack(s, "gw-a", AckPayload(id="no-such-command", ok=True))
    shown = client.get(f"/api/v1/devices/{device}/commands",
                       headers=world.headers("viewer")).json()
    assert [(c["state"], c["error"]) for c in shown] == [
        ("failed", "value above the register maximum")]
    audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                       params={"entity_type": "device", "entity_id": str(device)}).json()
    actions = [(e["action"], e["actor"]) for e in audit if e["action"].startswith("command.")]
    assert actions == [("command.requested", "user:technician"),
                       ("command.failed", "gateway:gw-a")]


def test_who_may_send_which_command(client, world) -> None:  # type: ignore[no-untyped-def]
    fire, flood = world.devices["fire-a"], world.devices["flood-a"]

    def send(who: str, device: int, action: str, body: dict[str, object] | None = None) -> int:
        return int(client.post(f"/api/v1/devices/{device}/commands", headers=world.headers(who),
                               json={"action": action, "body": body or {}}).status_code)

    assert send("fire-safety", fire, "reset") == 201      # reset a latched fire alarm
    assert send("fire-safety", fire, "reboot") == 403
    assert send("utility", fire, "reset") == 404          # a fire device it cannot see
    assert send("utility", flood, "repoll") == 201
    assert send("utility", flood, "write", {"register": "x", "value": 1}) == 403
    assert send("viewer", flood, "repoll") == 403
    assert send("technician", world.devices["water-b"], "repoll") == 404  # another ward
    assert send("technician", flood, "write", {"value": 1}) == 422        # no register
    assert send("technician", flood, "coil", {"value": "on"}) == 422      # not a bool
    assert send("technician", flood, "reboot", {"now": True}) == 422      # no body allowed
