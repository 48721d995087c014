"""Webhooks to outside systems (a 114 fire-dispatch bridge, a utility's SCADA): HMAC-signed,
queued in the alarm's own transaction, retried with back-off while the receiver is down, and
delivered exactly once per event when it comes back, also with two replicas racing."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from fleet.alarms import service as alarms
from fleet.core.db import Database, utcnow
from fleet.notify import webhooks
from fleet.notify.models import WebhookDelivery, WebhookSubscription
from fleet.notify.sealed import SealError, SecretBox
from fleet.notify.signing import SIGNATURE_HEADER, backoff_s, sign, verify
from tests.fleet.conftest import World, alarm_payload, empty_database_url, settings_for

SECRET = "a-shared-secret-for-the-114-bridge"


# -- pure --------------------------------------------------------------------------------------
def test_a_signature_verifies_and_tampering_or_replaying_later_does_not() -> None:
    body = b'{"event_id":7}'
    header = sign(SECRET, 1_764_650_000, body)
    assert header.startswith("t=1764650000,v1=")
    assert verify(SECRET, header, body, now=1_764_650_010)
    assert not verify(SECRET, header, body + b" ", now=1_764_650_010)
    assert not verify("another-secret-entirely-0000", header, body, now=1_764_650_010)
    assert not verify(SECRET, header, body, now=1_764_650_000 + 301)  # a replay, too late
    assert not verify(SECRET, "garbage", body, now=1_764_650_000)


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_s(n, rng=rng) for n in range(1, 15)]
    assert 2 <= delays[0] <= 2.5 and 4 <= delays[1] <= 5
    assert all(d <= 600 for d in delays) and delays[-1] >= 600 * 0.99
    assert len({round(backoff_s(3, rng=rng), 6) for _ in range(5)}) > 1


# -- a real receiver ---------------------------------------------------------------------------
class Receiver:
    """An outside system's HTTP endpoint that checks every signature; can be taken down and
    brought back on the same port."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.events: list[int] = []
        self.bad_signatures = 0
        self.secret = SECRET
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), body,
                            now=int(time.time()), tolerance_s=10**9)
                with receiver._lock:
                    if ok:
                        event = json.loads(body)["event_id"]
                        assert int(self.headers["X-Edgefleet-Event"]) == event
                        receiver.events.append(event)
                    else:
                        receiver.bad_signatures += 1
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.down()


def _subscribe(client, world, url: str) -> int:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/webhooks", headers=world.headers("admin"),
                    json={"name": "114 bridge", "url": url, "classes": ["fire"],
                          "secret": SECRET})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_a_receiver_down_then_back_gets_every_event_once(  # type: ignore[no-untyped-def]
        client, world, fleet_db, fleet_settings, receiver) -> None:
    BOX = SecretBox(fleet_settings.secret_key.get_secret_value())
    hook = _subscribe(client, world, receiver.url)
    with fleet_db.transaction() as s:
        ids = [alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", f"fa:smoke:1:{n}")).id
               for n in range(3)]
        alarms.apply_alarm(s, "gw-a", alarm_payload("flood-a", "fl:1", cls="flood"))  # not sent
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:0"))  # a replay
    assert client.post(f"/api/v1/alarms/{ids[0]}/acknowledge", headers=world.headers(
        "fire-safety"), json={"comment": "xe đang đến"}).status_code == 200
    t0 = utcnow()
    assert webhooks.deliver_due(fleet_db, BOX, t0) == (0, 4)  # the receiver is down: refused
    assert webhooks.deliver_due(fleet_db, BOX, t0) == (0, 0)  # nothing is due again yet
    receiver.up()
    assert webhooks.deliver_due(fleet_db, BOX, t0 + timedelta(hours=1)) == (4, 0)
    assert webhooks.deliver_due(fleet_db, BOX, t0 + timedelta(hours=2)) == (0, 0)
    assert len(receiver.events) == 4 == len(set(receiver.events))
    assert receiver.bad_signatures == 0
    deliveries = client.get(f"/api/v1/webhooks/{hook}/deliveries",
                            headers=world.headers("admin")).json()
    assert all(d["delivered_at"] and d["attempts"] == 2 for d in deliveries)
    # down again mid-stream, then back: still nothing lost, nothing twice
    receiver.down()
    with fleet_db.transaction() as s:
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:smoke:1:9"))
    assert webhooks.deliver_due(fleet_db, BOX, t0 + timedelta(hours=3)) == (0, 1)
    receiver.up()
    assert webhooks.deliver_due(fleet_db, BOX, t0 + timedelta(hours=4)) == (1, 0)
    assert len(receiver.events) == 5 == len(set(receiver.events))


def test_two_replicas_deliver_each_event_once_on_postgresql(pg_url, tmp_path,  # type: ignore[no-untyped-def]
                                                            receiver) -> None:
    setup = Database.from_url(pg_url)
    settings = settings_for(pg_url, tmp_path)
    World(setup, settings)
    box = SecretBox(settings.secret_key.get_secret_value())
    with setup.transaction() as s:
        webhooks.create_subscription(s, box, name="scada", url=receiver.url, classes=[],
                                     secret=SECRET, actor="test")
        for n in range(40):
            alarms.apply_alarm(s, "gw-a", alarm_payload("flood-a", f"fl:{n}", cls="flood"))
    receiver.up()
    replicas = [Database.from_url(pg_url) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=30)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def replica(db: Database) -> None:
        try:
            barrier.wait()
            for _ in range(10):
                results.append(webhooks.deliver_due(db, box, utcnow(), limit=5))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(db,)) for db in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(d for d, _ in results) == 40
    assert sorted(receiver.events) == sorted(set(receiver.events)) and len(receiver.events) == 40
    with setup.transaction() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)
                        .where(WebhookDelivery.delivered_at.is_(None))) == 0
    for db in (*replicas, setup):
        db.dispose()


# -- the shared secret at rest -----------------------------------------------------------------
def test_a_webhook_secret_is_shown_once_stored_sealed_and_never_logged(  # type: ignore[no-untyped-def]
        client, world, fleet_db, fleet_settings, receiver, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post("/api/v1/webhooks", headers=world.headers("admin"),
                    json={"name": "114 bridge", "url": receiver.url, "classes": ["fire"]})
    assert r.status_code == 201
    shown = r.json()["secret"]  # generated, shown this once
    assert len(shown) >= 32
    listed = client.get("/api/v1/webhooks", headers=world.headers("admin"))
    assert shown not in listed.text and "secret" not in listed.text
    with fleet_db.transaction() as s:
        sealed = s.scalar(select(WebhookSubscription.secret_sealed))
        assert sealed is not None and shown not in sealed
        raw = json.dumps([list(row) for row in s.execute(select(WebhookSubscription)
                                                       .with_only_columns(
                                                           *WebhookSubscription.__table__.c))],
                         default=str)
        assert shown not in raw  # no column of the row holds it in clear
    assert SecretBox(fleet_settings.secret_key.get_secret_value()).open(sealed) == shown
    with pytest.raises(SealError):  # another installation's key opens nothing
        SecretBox("another-installation-secret-key-0123456789").open(sealed)
    # deliveries are signed with it, and it appears in no log line on the way
    with fleet_db.transaction() as s:
        alarms.apply_alarm(s, "gw-a", alarm_payload("fire-a", "fa:seal:1"))
    receiver.secret = shown
    receiver.up()
    assert webhooks.deliver_due(fleet_db, SecretBox(
        fleet_settings.secret_key.get_secret_value())) == (1, 0)
    assert len(receiver.events) == 1 and receiver.bad_signatures == 0
    assert shown not in caplog.text


def test_a_secret_that_will_not_open_sends_nothing_unsigned(fleet_db, world, receiver) -> None:  # type: ignore[no-untyped-def]
    ours = SecretBox("this-installation-secret-key-0123456789")
    with fleet_db.transaction() as s:
        webhooks.create_subscription(s, SecretBox("a-restored-backups-other-key-0123456789"),
                                     name="scada", url=receiver.url, classes=[], secret=SECRET,
                                     actor="test")
        alarms.apply_alarm(s, "gw-a", alarm_payload("flood-a", "fl:seal:1", cls="flood"))
    receiver.up()
    assert webhooks.deliver_due(fleet_db, ours) == (0, 1)
    assert receiver.events == [] and receiver.bad_signatures == 0
    with fleet_db.transaction() as s:
        error = s.scalar(select(WebhookDelivery.last_error))
    assert error is not None and "secret_key" in error


def _database_at_0006(kind: str, tmp_path, request) -> str:  # type: ignore[no-untyped-def]
    from fleet.core.migrate import upgrade

    url = empty_database_url(kind, tmp_path, request)
    upgrade(url, "0006")
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_seals_existing_secrets_and_needs_the_key(kind, tmp_path, request) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from fleet.core.migrate import downgrade, upgrade

    url = _database_at_0006(kind, tmp_path, request)
    db = Database.from_url(url)
    try:
        with db.transaction() as s:
            s.execute(text("INSERT INTO webhook_subscriptions (name, url, secret, classes, "
                           "active, created_at) VALUES ('114', 'http://127.0.0.1:9/x', "
                           ":secret, '[]', true, '2026-12-01 00:00:00+00')"),
                      {"secret": SECRET})
        with pytest.raises(RuntimeError, match="secret key"):
            upgrade(url)  # bare: it cannot seal without the key, and changes nothing
        key = "the-installations-secret-key-0123456789"
        upgrade(url, secret_key=key)
        with db.transaction() as s:
            sealed = s.scalar(text("SELECT secret_sealed FROM webhook_subscriptions"))
        assert SECRET not in sealed and SecretBox(key).open(sealed) == SECRET
        downgrade(url, "0006", secret_key=key)
        with db.transaction() as s:
            assert s.scalar(text("SELECT secret FROM webhook_subscriptions")) == SECRET
    finally:
        db.dispose()
