"""Commands to devices through the gateway's cmd/ topics, on SQLite and PostgreSQL: who may
send what, the payload the gateway receives, the gateway's ack recorded and shown, and each
command published once however many replicas run (claims with a lease in the database)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from contracts.mqtt import AckPayload, command_topic, parse_topic
from fleet.control import service
from fleet.control.actions import ACTIONS
from fleet.control.models import DeviceCommand
from tests.fleet.ingest_harness import FleetBroker, wait_until
from tests.gateway.mosquitto import Subscriber


def test_the_fleet_offers_exactly_the_actions_the_gateway_executes() -> None:
    from gateway.service import COMMANDS

    # ``ota`` is the gateway's too, but only update campaigns send it (fleet.ota), never the
    # command API
    assert set(ACTIONS) | {"ota"} == set(COMMANDS)


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
                       ("command.sent", "replica:replica-1"),
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


# -- one publisher per command across replicas -------------------------------------------------
def _queue(db, world, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Queue ``n`` repolls as the technician would through the API; their command ids."""
    from fleet.auth.models import User
    from fleet.auth.rbac import Principal

    with db.transaction() as s:
        user_id = s.scalar(select(User.id).where(User.username == "technician"))
        tech = Principal(user_id=user_id, username="technician", role="technician",
                         area_path=None)
        return [service.request_command(s, tech, world.devices["flood-a"], "repoll",
                                        {}).command_id for _ in range(n)]


def test_a_claim_left_by_a_dead_replica_is_taken_over_after_its_lease(fleet_db,  # type: ignore[no-untyped-def]
                                                                      world) -> None:
    from fleet.core.db import utcnow

    ids = _queue(fleet_db, world, 3)
    t0 = utcnow()
    with fleet_db.transaction() as s:
        claimed = service.claim(s, "dead-replica", t0)
    assert len(claimed) == 3  # ... and then the replica was SIGKILLed before publishing
    with fleet_db.transaction() as s:
        assert service.claim(s, "live-replica", t0 + timedelta(seconds=5)) == []
    later = t0 + service.CLAIM_LEASE + timedelta(seconds=1)
    with fleet_db.transaction() as s:
        taken = service.claim(s, "live-replica", later)
    assert sorted(json.loads(o.payload)["id"] for o in taken) == sorted(ids)
    with fleet_db.transaction() as s:  # the dead replica's late word changes nothing
        assert service.mark_sent(s, "dead-replica", [o.id for o in claimed]) == 0
        assert service.mark_sent(s, "live-replica", [o.id for o in taken]) == 3


def test_a_command_given_back_after_a_failed_publish_is_claimed_again_at_once(  # type: ignore[no-untyped-def]
        fleet_db, world) -> None:
    _queue(fleet_db, world, 1)
    with fleet_db.transaction() as s:
        first = service.claim(s, "replica-1")
    with fleet_db.transaction() as s:
        service.release(s, "replica-1", [o.id for o in first])  # no PUBACK came
    with fleet_db.transaction() as s:
        assert [o.id for o in service.claim(s, "replica-2")] == [o.id for o in first]


def test_a_claim_in_progress_on_postgresql_is_skipped_not_waited_for(pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fleet.core.db import Database
    from tests.fleet.conftest import World, settings_for

    db = Database.from_url(pg_url)
    try:
        world = World(db, settings_for(pg_url, tmp_path))
        _queue(db, world, 4)
        first = db.sessions()
        second = db.sessions()
        with first.begin():
            mine = service.claim(first, "replica-1", limit=2)  # not yet committed
            with second.begin():
                second.connection().exec_driver_sql("SET LOCAL lock_timeout = '2s'")
                theirs = service.claim(second, "replica-2")
        assert len(mine) == 2 and len(theirs) == 2
        assert not {o.id for o in mine} & {o.id for o in theirs}
        first.close()
        second.close()
    finally:
        db.dispose()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.stop()


def test_two_replicas_publish_every_command_exactly_once(fleet_settings, world, broker,  # type: ignore[no-untyped-def]
                                                        tmp_path) -> None:
    """Two ingest replicas (each its own engine) on one database and one broker, commands
    queued before and while they run: a gateway-side subscriber sees each command once."""
    from fleet.core.db import Database
    from fleet.ingest.process import IngestProcess
    from fleet.ingest.settings import IngestSettings

    replicas = []
    for n in (1, 2):
        settings = fleet_settings.model_copy(update={
            "data_dir": tmp_path / f"replica-{n}",
            "ingest": IngestSettings(host=broker.host, port=broker.port,
                                     client_id=f"replica-{n}", command_poll_s=0.02,
                                     batch_wait_s=0.01)})
        db = Database.from_url(settings.database_url)
        replicas.append((IngestProcess(settings, db), db))
    db = replicas[0][1]
    with Subscriber(broker, "edgefleet/v1/+/cmd/#") as gateway:
        queued = _queue(db, world, 40)
        for process, _ in replicas:
            process.start()
        try:
            for _ in range(8):  # more while both are publishing
                queued += _queue(db, world, 5)
                time.sleep(0.05)

            def all_sent() -> bool:
                with db.reading() as s:
                    return s.scalar(select(func.count()).select_from(DeviceCommand).where(
                        DeviceCommand.state == "pending")) == 0
            wait_until(all_sent, 60, "every command published")
            gateway.wait_count(len(queued), 20)
            time.sleep(0.5)  # a second copy would come within a publish pass or two
        finally:
            for process, _ in replicas:
                process.stop()
            for _, engine in replicas:
                engine.dispose()
        seen = Counter(json.loads(m.payload)["id"] for m in gateway.messages)
    assert sorted(seen) == sorted(queued)
    assert [cid for cid, n in seen.items() if n != 1] == []
    assert all(m.topic == command_topic("gw-a", "flood-a", "repoll") for m in gateway.messages)
