"""Alarms on SQLite and PostgreSQL: the lifecycle (a pure table), replays that never duplicate,
acknowledgement through the API with who and when in the audit log, escalation that fires once
however many replicas run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from fleet.alarms import lifecycle, service
from fleet.alarms.lifecycle import AlarmView, Outcome
from fleet.alarms.models import Alarm, Escalation
from fleet.audit.models import AuditEntry
from fleet.core.db import Database, utcnow
from fleet.core.settings import EscalationStep
from tests.fleet.conftest import World, alarm_payload, settings_for

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
FIRE = [EscalationStep(after_s=120, role="fire-safety"), EscalationStep(after_s=300, role="admin")]
POLICY = {"fire": FIRE, "default": [EscalationStep(after_s=1800, role="technician")]}


# -- the pure lifecycle ------------------------------------------------------------------------
R, A, X = "raised", "acknowledged", "resolved"


@pytest.mark.parametrize("current, report, expected", [
    (None, "raised", Outcome(R, True, ("alarm.raised",))),
    (None, "cleared", Outcome(R, False, ("alarm.raised", "alarm.cleared"))),
    (AlarmView(R, True), "raised", Outcome(R, True, ())),          # replay
    (AlarmView(R, True), "cleared", Outcome(R, False, ("alarm.cleared",))),
    (AlarmView(R, False), "cleared", Outcome(R, False, ())),        # replayed clear
    (AlarmView(R, False), "raised", Outcome(R, False, ())),         # late replay of the raise
    (AlarmView(A, True), "cleared", Outcome(X, False, ("alarm.cleared", "alarm.resolved"))),
    (AlarmView(A, True), "raised", Outcome(A, True, ())),
    (AlarmView(X, True), "cleared", Outcome(X, False, ("alarm.cleared",))),
    (AlarmView(X, False), "raised", Outcome(X, False, ())),
])
def test_device_reports_drive_the_lifecycle(current: AlarmView | None, report: str,
                                            expected: Outcome) -> None:
    assert lifecycle.on_device(current, report) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("current, expected", [
    (AlarmView(R, True), Outcome(A, True, ("alarm.acknowledged",))),
    (AlarmView(R, False), Outcome(X, False, ("alarm.acknowledged", "alarm.resolved"))),
    (AlarmView(A, True), "already acknowledged"),
    (AlarmView(X, False), "already resolved"),
])
def test_acknowledging(current: AlarmView, expected: Outcome | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(lifecycle.LifecycleError, match=expected):
            lifecycle.on_acknowledge(current)
    else:
        assert lifecycle.on_acknowledge(current) == expected


@pytest.mark.parametrize("current, expected", [
    (AlarmView(R, True), "acknowledge the alarm before"),
    (AlarmView(A, True), Outcome(X, True, ("alarm.resolved",))),
    (AlarmView(A, False), Outcome(X, False, ("alarm.resolved",))),
    (AlarmView(X, False), "already resolved"),
])
def test_resolving(current: AlarmView, expected: Outcome | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(lifecycle.LifecycleError, match=expected):
            lifecycle.on_resolve(current)
    else:
        assert lifecycle.on_resolve(current) == expected


@pytest.mark.parametrize("state, level, after_s, expected", [
    ("raised", 0, 119.9, None),
    ("raised", 0, 120, 1),           # fire: two minutes unacknowledged -> fire-safety
    ("raised", 1, 200, None),         # level 1 already fired
    ("raised", 1, 300, 2),            # five minutes -> admin
    ("raised", 0, 3600, 2),           # both overdue at once (a replica was down): jump to 2
    ("raised", 2, 99999, None),       # no further step
    ("acknowledged", 0, 3600, None),  # someone is on it
    ("resolved", 0, 3600, None),
])
def test_escalation_due(state: str, level: int, after_s: float, expected: int | None) -> None:
    now = T0 + timedelta(seconds=after_s)
    assert lifecycle.escalation_due(state, level, T0, now, FIRE) == expected


def test_next_deadline_for_the_countdown() -> None:
    assert lifecycle.next_deadline("raised", 0, T0, FIRE) == T0 + timedelta(minutes=2)
    assert lifecycle.next_deadline("raised", 2, T0, FIRE) is None
    assert lifecycle.next_deadline("acknowledged", 0, T0, FIRE) is None


# -- against the database ----------------------------------------------------------------------
def count(db: Database, model: type, *where: object) -> int:
    with db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def test_a_replayed_alarm_never_duplicates(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    raised = alarm_payload("fire-a", "fire-a:smoke:3:1")
    cleared = alarm_payload("fire-a", "fire-a:smoke:3:1", state="cleared", seq=2)
    # the gateway's outbox replays after a reconnect: raise, raise, clear, raise, clear
    for payload in (raised, raised, cleared, raised, cleared):
        with fleet_db.transaction() as s:
            service.apply_alarm(s, "gw-a", payload)
    assert count(fleet_db, Alarm) == 1
    with fleet_db.transaction() as s:
        alarm = s.scalars(select(Alarm)).one()
        assert (alarm.state, alarm.active) == ("raised", False)
        actions = s.scalars(select(AuditEntry.action).where(AuditEntry.entity_type == "alarm")
                            .order_by(AuditEntry.id)).all()
    assert actions == ["alarm.raised", "alarm.cleared"]


def test_the_same_alarm_id_from_another_gateway_is_another_alarm(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        service.apply_alarm(s, "gw-a", alarm_payload("fire-a", "x:smoke:1:1"))
        service.apply_alarm(s, "gw-b", alarm_payload("fire-b", "x:smoke:1:1"))
    assert count(fleet_db, Alarm) == 2


def test_a_fire_safety_officer_acknowledges_and_the_audit_log_says_who_and_when(  # type: ignore[no-untyped-def]
        client, world, fleet_db) -> None:
    with fleet_db.transaction() as s:
        alarm_id = service.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1")).id
    # a utility user in the same ward does not see the fire alarm at all
    assert client.get("/api/v1/alarms", headers=world.headers("utility")).json() == []
    r = client.post(f"/api/v1/alarms/{alarm_id}/acknowledge",
                    headers=world.headers("utility"), json={"comment": "mine?"})
    assert r.status_code == 404
    before = utcnow()
    r = client.post(f"/api/v1/alarms/{alarm_id}/acknowledge",
                    headers=world.headers("fire-safety"),
                    json={"comment": "đội PCCC đang đến"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "acknowledged" and r.json()["ack_comment"] == "đội PCCC đang đến"
    r = client.post(f"/api/v1/alarms/{alarm_id}/acknowledge",
                    headers=world.headers("fire-safety"), json={})
    assert r.status_code == 409 and r.json()["type"].endswith("alarm-state")
    audit = client.get("/api/v1/audit", headers=world.headers("admin"),
                       params={"entity_type": "alarm", "entity_id": str(alarm_id)}).json()
    ack = [e for e in audit if e["action"] == "alarm.acknowledged"]
    assert len(ack) == 1 and ack[0]["actor"] == "user:fire-safety"
    assert ack[0]["detail"]["comment"] == "đội PCCC đang đến"
    assert datetime.fromisoformat(ack[0]["at"]) >= before - timedelta(seconds=1)
    # the device clears: acknowledged -> resolved
    with fleet_db.transaction() as s:
        service.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1", "cleared", seq=2))
    r = client.get(f"/api/v1/alarms/{alarm_id}", headers=world.headers("viewer"))
    assert r.json()["state"] == "resolved" and r.json()["active"] is False
    history = client.get(f"/api/v1/alarms/{alarm_id}/history",
                         headers=world.headers("viewer")).json()
    assert [h["action"] for h in history] == ["alarm.raised", "alarm.acknowledged",
                                              "alarm.cleared", "alarm.resolved"]


def test_a_viewer_cannot_acknowledge(client, world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        alarm_id = service.apply_alarm(s, "gw-a", alarm_payload("flood-a", "fl:level:1:1",
                                                                cls="flood")).id
    r = client.post(f"/api/v1/alarms/{alarm_id}/acknowledge", headers=world.headers("viewer"),
                    json={"comment": "x"})
    assert r.status_code == 403


def test_an_unacknowledged_fire_escalates_once_per_level(world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        service.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1",
                                                     ts="2026-12-02T05:00:00Z"))
    for minutes, expected in ((1, []), (2, [(1, "fire-safety")]), (3, []), (6, [(2, "admin")]),
                              (60, [])):
        with fleet_db.transaction() as s:
            fired = service.escalate_due(s, POLICY, T0 + timedelta(minutes=minutes))
        assert [(f.level, f.role) for f in fired] == expected, minutes
    assert count(fleet_db, Escalation) == 2


def test_an_acknowledged_alarm_does_not_escalate(client, world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        alarm_id = service.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1")).id
    client.post(f"/api/v1/alarms/{alarm_id}/acknowledge", headers=world.headers("technician"),
                json={"comment": "on it"})
    with fleet_db.transaction() as s:
        assert service.escalate_due(s, POLICY, T0 + timedelta(hours=1)) == []


def test_two_replicas_racing_fire_each_escalation_once_on_postgresql(  # type: ignore[no-untyped-def]
        pg_url, tmp_path) -> None:
    setup = Database.from_url(pg_url)
    World(setup, settings_for(pg_url, tmp_path))
    with setup.transaction() as s:
        for n in range(40):
            service.apply_alarm(s, "gw-a", alarm_payload("fire-a", f"fa:smoke:1:{n}"))
    replicas = [Database.from_url(pg_url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    fired: list[list[service.EscalationFired]] = [[], []]
    errors: list[BaseException] = []

    def replica(i: int) -> None:
        try:
            for minutes in (2, 6):
                barrier.wait()
                with replicas[i].transaction() as s:
                    fired[i] += service.escalate_due(s, POLICY,
                                                     T0 + timedelta(minutes=minutes),
                                                     fired_by=f"replica-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    everything = fired[0] + fired[1]
    assert len(everything) == 80  # 40 alarms x 2 levels, each exactly once
    assert len({(f.alarm_id, f.level) for f in everything}) == 80
    assert count(setup, Escalation) == 80
    with setup.transaction() as s:
        audit = s.scalar(select(func.count()).select_from(AuditEntry)
                         .where(AuditEntry.action == "alarm.escalated"))
    assert audit == 80
    for db in (*replicas, setup):
        db.dispose()


def test_two_ingest_replicas_racing_on_a_new_alarm_make_one_alarm(pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    setup = Database.from_url(pg_url)
    World(setup, settings_for(pg_url, tmp_path))
    replicas = [Database.from_url(pg_url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def replica(i: int) -> None:
        try:
            for n in range(30):
                barrier.wait()
                with replicas[i].transaction() as s:
                    service.apply_alarm(s, "gw-a", alarm_payload("fire-a", f"fa:heat:2:{n}"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert count(setup, Alarm) == 30
    with setup.transaction() as s:
        raised = s.scalar(select(func.count()).select_from(AuditEntry)
                          .where(AuditEntry.action == "alarm.raised"))
    assert raised == 30
    for db in (*replicas, setup):
        db.dispose()
