"""Live push: a browser's EventSource gets alarm changes it may see, as they are committed by
ingest (here: another connection, as another process would), and resumes with Last-Event-ID.

Runs the real app under uvicorn on a free port and reads the stream with httpx."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from fleet.alarms import service as alarms
from fleet.core.settings import EscalationStep
from fleet.notify.models import UserNotification
from tests.fleet.conftest import alarm_payload


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(fleet_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(fleet_app, host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="on",
                                        timeout_graceful_shutdown=0.5))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    assert not thread.is_alive(), "uvicorn did not stop"


class Stream:
    """Reads SSE events in a thread; ``next(timeout)`` returns the next (id, data)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        #: ``escalation`` events: addressed to this user (their role, their area).
        self.escalations: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.start_id: int | None = None  # an id with no event: where the stream starts
        self.started = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(5, read=None))
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.connected.wait(10), "the stream did not open"

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                event_id, data, name = 0, "", "message"
                for line in r.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("id: "):
                        event_id = int(line[4:])
                    elif line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and data:
                        if name == "escalation":
                            self.escalations.put(json.loads(data))
                        else:
                            self.events.put((event_id, json.loads(data)))
                        data, name = "", "message"
                    elif line == "" and event_id and self.start_id is None:
                        self.start_id = event_id
                        self.started.set()
        except (httpx.HTTPError, RuntimeError):
            pass

    def next(self, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self._client.close()


def test_a_fire_alarm_reaches_the_fire_officer_live_and_never_the_utility_user(  # type: ignore[no-untyped-def]
        server, world, fleet_db) -> None:
    url = f"{server}/api/v1/notify/alarms"
    officer = Stream(url, world.headers("fire-safety"))
    utility = Stream(f"{url}?access_token={world.tokens['utility']}", {})  # EventSource style
    other_ward = Stream(url, {"Authorization": f"Bearer {world.tokens['viewer']}"})
    try:
        with fleet_db.transaction() as s:  # as ingest would, on its own connection
            alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1"))
        with fleet_db.transaction() as s:
            alarms.apply_alarm(s, "gw-a", alarm_payload("flood-a", "fl:level:1:1",
                                                        cls="flood"))
        with fleet_db.transaction() as s:
            alarms.apply_alarm(s, "gw-b", alarm_payload("water-b", "wb:ph:1:1", cls="water"))
        _, first = officer.next()
        assert first["action"] == "alarm.raised" and first["alarm"]["device"] == "fire-a"
        assert officer.next()[1]["alarm"]["device"] == "flood-a"
        # the utility user's first event is the flood alarm: the fire alarm was filtered out
        assert utility.next()[1]["alarm"]["device"] == "flood-a"
        assert other_ward.next()[1]["alarm"]["device"] == "fire-a"
        # ward B's water alarm reaches nobody scoped to ward A
        with pytest.raises(queue.Empty):
            officer.next(timeout=1.0)
        with pytest.raises(queue.Empty):
            utility.next(timeout=0.2)
    finally:
        for s in (officer, utility, other_ward):
            s.close()


def test_a_reconnecting_client_resumes_from_last_event_id(server, world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    url = f"{server}/api/v1/notify/alarms"
    first = Stream(url, world.headers("admin"))
    with fleet_db.transaction() as s:
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1"))
    seen, _ = first.next()
    first.close()
    with fleet_db.transaction() as s:  # while the client was away
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1", "cleared", seq=2))
    again = Stream(url, {**world.headers("admin"), "Last-Event-ID": str(seen)})
    try:
        event_id, data = again.next()
        assert event_id > seen and data["action"] == "alarm.cleared"
    finally:
        again.close()


def test_a_client_that_saw_no_event_still_resumes_from_where_its_stream_began(  # type: ignore[no-untyped-def]
        server, world, fleet_db) -> None:
    """A quiet board (no alarm since it connected) whose stream drops: the browser resumes with
    the id the stream began with, so an alarm raised while it was away is replayed."""
    with fleet_db.transaction() as s:  # history before the board connected
        alarms.apply_alarm(s, "gw-a", alarm_payload("flood-a", "fl:level:1:1", cls="flood"))
    url = f"{server}/api/v1/notify/alarms"
    quiet = Stream(url, world.headers("admin"))
    assert quiet.started.wait(5), "the stream did not say where it starts"
    start = quiet.start_id
    assert start is not None and start > 0
    quiet.close()
    with fleet_db.transaction() as s:  # while the client was away
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:1"))
    again = Stream(url, {**world.headers("admin"), "Last-Event-ID": str(start)})
    try:
        event_id, data = again.next()
        assert event_id > start and data["alarm"]["device"] == "fire-a"  # not the old flood
        assert again.start_id is None  # a resumed stream keeps the client's own id
    finally:
        again.close()


def test_a_command_and_its_ack_reach_who_may_see_the_device(server, world, fleet_db) -> None:  # type: ignore[no-untyped-def]
    from contracts.mqtt import AckPayload
    from fleet.auth.models import User
    from fleet.auth.rbac import Principal
    from fleet.control import service as control

    url = f"{server}/api/v1/notify/alarms"
    officer = Stream(url, world.headers("fire-safety"))
    utility = Stream(url, world.headers("utility"))
    try:
        with fleet_db.transaction() as s:
            user = s.query(User).filter_by(username="technician").one()
            tech = Principal(user_id=user.id, username="technician", role="technician",
                             area_path=None)
            fire = control.request_command(s, tech, world.devices["fire-a"], "reset", {})
            command_id = fire.command_id
        with fleet_db.transaction() as s:  # the gateway's ack, as ingest applies it
            control.apply_ack(s, "gw-a", AckPayload(id=command_id, ok=True))
        with fleet_db.transaction() as s:
            control.request_command(s, tech, world.devices["flood-a"], "repoll", {})
        states = [officer.next()[1] for _ in range(3)]
        assert [(e["command"]["device"], e["command"]["state"]) for e in states] == [
            ("fire-a", "requested"), ("fire-a", "ok"), ("flood-a", "requested")]
        assert states[1]["command"]["command_id"] == command_id
        # The utility user sees no fire device, so none of its commands either.
        assert utility.next()[1]["command"]["device"] == "flood-a"
    finally:
        officer.close()
        utility.close()


def test_the_stream_needs_a_valid_token(server) -> None:  # type: ignore[no-untyped-def]
    r = httpx.get(f"{server}/api/v1/notify/alarms", params={"access_token": "nope"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_a_restarted_fleet_does_not_replay_old_alarms_to_new_subscribers(  # type: ignore[no-untyped-def]
        world, fleet_db) -> None:
    from fleet.notify.feed import AlarmFeed

    with fleet_db.transaction() as s:  # before this fleet process started
        for n in range(3):
            alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", f"fa:old:1:{n}"))
    feed = AlarmFeed(fleet_db, poll_s=0.1)
    assert feed._poll() == []  # the first poll finds where "now" is
    assert feed._poll() == []  # ... and the next must not send the past again
    with fleet_db.transaction() as s:
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:new:1:1"))
    assert [e.data["alarm"]["alarm_key"] for e in feed._poll()] == ["fa:new:1:1"]


def test_the_live_push_poller_never_waits_behind_a_writer_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from fleet.core.db import Database
    from fleet.core.migrate import upgrade
    from fleet.notify.feed import AlarmFeed

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(url)
    db = Database.from_url(url)
    feed = AlarmFeed(db, poll_s=0.1)
    feed._poll()
    done = threading.Event()
    try:
        with db.transaction() as writer:  # ingest in the middle of a batch: write lock held
            writer.execute(text("INSERT INTO audit_log (at, actor, action, entity_type, "
                                "entity_id, detail) VALUES ('2026-12-02 06:00:00', 'x', "
                                "'x', 'x', 'x', '{}')"))
            threading.Thread(target=lambda: (feed._poll(), done.set()), daemon=True).start()
            assert done.wait(2.0), "the poller queued behind the writer's lock"
    finally:
        db.dispose()


# -- escalations reach the people of the role, in their area -----------------------------------
FIRE_POLICY = {"fire": [EscalationStep(after_s=120, role="fire-safety"),
                        EscalationStep(after_s=300, role="admin")]}
T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def _add_user(world, db, settings, name: str, role: str, area: int) -> None:  # type: ignore[no-untyped-def]
    from fleet.auth import service as auth

    with db.transaction() as s:
        user = auth.create_user(s, settings, username=name, password=f"pw-{name}-0123456789",
                                role=role, area_id=area)
        world.tokens[name] = auth.issue_token(s, settings, user, kind="session")


def test_an_escalation_reaches_the_fire_officer_of_the_ward_and_not_the_next_ward(  # type: ignore[no-untyped-def]
        server, world, fleet_db, fleet_settings) -> None:
    _add_user(world, fleet_db, fleet_settings, "fire-safety-b", "fire-safety", world.ward_b)
    url = f"{server}/api/v1/notify/alarms"
    officer_a = Stream(url, world.headers("fire-safety"))
    officer_b = Stream(url, world.headers("fire-safety-b"))
    viewer_a = Stream(url, world.headers("viewer"))  # same ward, not the escalation's role
    try:
        with fleet_db.transaction() as s:
            alarm_id = alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:9:1")).id
        with fleet_db.transaction() as s:
            fired = alarms.escalate_due(s, FIRE_POLICY, T0 + timedelta(minutes=2))
        notified = {who: _user_id(fleet_db, who) for who in ("fire-safety", "fire-safety-b")}
        assert [(f.level, f.role, f.notified) for f in fired] == [
            (1, "fire-safety", (notified["fire-safety"],))]
        personal = officer_a.escalations.get(timeout=10)
        assert personal["alarm"]["id"] == alarm_id
        assert personal["escalation"] == {"level": 1, "role": "fire-safety"}
        assert [officer_a.next()[1]["action"] for _ in range(2)] == ["alarm.raised",
                                                                     "alarm.escalated"]
        assert [viewer_a.next()[1]["action"] for _ in range(2)] == ["alarm.raised",
                                                                    "alarm.escalated"]
        with pytest.raises(queue.Empty):  # ward B's officer hears nothing of ward A's fire
            officer_b.escalations.get(timeout=1.0)
        with pytest.raises(queue.Empty):
            officer_b.next(timeout=0.1)
        with pytest.raises(queue.Empty):  # the viewer sees the alarm, it is not theirs
            viewer_a.escalations.get(timeout=0.1)
    finally:
        for stream in (officer_a, officer_b, viewer_a):
            stream.close()
    # the inbox keeps it for whoever was not watching
    with httpx.Client(base_url=server) as http:
        inbox = http.get("/api/v1/notify/inbox", headers=world.headers("fire-safety")).json()
        assert [(n["alarm_id"], n["role"], n["level"], n["read_at"]) for n in inbox] == [
            (alarm_id, "fire-safety", 1, None)]
        assert http.get("/api/v1/notify/inbox",
                        headers=world.headers("fire-safety-b")).json() == []
        assert http.get("/api/v1/notify/inbox", headers=world.headers("viewer")).json() == []
        assert http.post(f"/api/v1/notify/inbox/{inbox[0]['id']}/read",
                         headers=world.headers("fire-safety-b")).status_code == 404
        assert http.post(f"/api/v1/notify/inbox/{inbox[0]['id']}/read",
                         headers=world.headers("fire-safety")).status_code == 204
        assert http.get("/api/v1/notify/inbox", params={"unread": "true"},
                        headers=world.headers("fire-safety")).json() == []
        audit = http.get("/api/v1/audit", headers=world.headers("admin"),
                         params={"action": "notification.read"}).json()
        assert [(e["actor"], e["detail"]["alarm_id"]) for e in audit] == [
            ("user:fire-safety", alarm_id)]


def _user_id(db, username: str) -> int:  # type: ignore[no-untyped-def]
    from fleet.auth.models import User

    with db.reading() as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
    assert user_id is not None
    return int(user_id)


def test_the_admin_level_reaches_the_city_admin_and_the_wards_admin_only(  # type: ignore[no-untyped-def]
        world, fleet_db, fleet_settings) -> None:
    _add_user(world, fleet_db, fleet_settings, "ward-b-admin", "admin", world.ward_b)
    with fleet_db.transaction() as s:
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:9:2"))
    with fleet_db.transaction() as s:
        fired = alarms.escalate_due(s, FIRE_POLICY, T0 + timedelta(minutes=6))
    by_level = {f.level: set(f.notified) for f in fired}
    assert by_level == {
        1: {_user_id(fleet_db, "fire-safety")},
        2: {_user_id(fleet_db, "admin"), _user_id(fleet_db, "ward-admin")}}
    with fleet_db.transaction() as s:  # a second pass (another replica) notifies nobody again
        assert alarms.escalate_due(s, FIRE_POLICY, T0 + timedelta(minutes=7)) == []
        assert s.scalar(select(func.count()).select_from(UserNotification)) == 3
