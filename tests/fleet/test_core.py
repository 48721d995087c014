"""Core: settings refuse default secrets, migrations match the models, errors are problem+json."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.core.migrate import pending_changes
from fleet.core.settings import ConfigError, load_settings

GOOD_SECRET = "k" * 16 + "Z" * 16 + "q" * 8


@pytest.mark.parametrize("secret, why", [
    ("", "empty"),
    ("   ", "empty"),
    ("changeme", "well-known"),
    ("CHANGEME", "well-known"),
    ("short-but-random-4f9a", "shorter than 32"),
])
def test_the_fleet_refuses_to_start_with_a_default_or_weak_secret(secret: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        load_settings(secret_key=secret)


def test_no_secret_anywhere_is_refused_and_names_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEFLEET_FLEET_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings()


def test_settings_come_from_the_toml_file_and_the_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'secret_key = "{GOOD_SECRET}"\ndata_dir = "{tmp_path}/d"\n'
                   'lockout_failures = 3\n[[escalation.fire]]\nafter_s = 60\nrole = "admin"\n')
    monkeypatch.setenv("EDGEFLEET_FLEET_LOCKOUT_FAILURES", "7")
    s = load_settings(cfg)
    assert s.lockout_failures == 7
    assert s.database_url == f"sqlite:///{tmp_path}/d/fleet.db"
    assert s.escalation["fire"][0].after_s == 60
    assert s.secret_key.get_secret_value() == GOOD_SECRET
    assert GOOD_SECRET not in repr(s)


def test_a_typo_in_the_config_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'secret_key = "{GOOD_SECRET}"\nlockout_failure = 3\n')
    with pytest.raises(ConfigError, match=r"fleet.toml: lockout_failure"):
        load_settings(cfg)


def test_the_migrated_schema_matches_the_models(db_url: str) -> None:
    assert pending_changes(db_url) == []


def test_errors_are_problem_json(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/api/v1/auth/me")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == 401 and body["title"] == "Unauthorized"
    assert body["type"].startswith("urn:edgefleet:problem:")
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = client.post("/api/v1/auth/login", json={"username": ""})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


def test_the_openapi_document_is_generated_by_fastapi(client) -> None:  # type: ignore[no-untyped-def]
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/auth/login" in doc["paths"]


def test_reading_the_api_never_waits_behind_an_ingest_batch_on_sqlite(tmp_path: Path) -> None:
    import threading

    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from fleet.app import create_app
    from fleet.core.db import Database
    from fleet.core.migrate import upgrade
    from tests.fleet.conftest import World, settings_for

    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(url)
    settings = settings_for(url, tmp_path)
    db = Database.from_url(url)
    world = World(db, settings)
    answered = threading.Event()
    try:
        with TestClient(create_app(settings, database=db)) as client:
            def read() -> None:
                r = client.get("/api/v1/devices", headers=world.headers("viewer"))
                if r.status_code == 200:
                    answered.set()

            with db.transaction() as ingest:  # a batch in flight holds the write lock
                ingest.execute(text("UPDATE devices SET last_seen = NULL"))
                threading.Thread(target=read, daemon=True).start()
                assert answered.wait(5.0), "a GET queued behind the writer's lock"
    finally:
        db.dispose()


def test_a_write_is_committed_before_its_response_starts(fleet_app, fleet_db, world) -> None:  # type: ignore[no-untyped-def]
    """A client that reads right after a 201 sees what it created. The dashboard re-reads a
    device's commands the moment its POST returns; with the commit after the response (FastAPI's
    default for a dependency with yield) that read could miss the new command, and the page
    stopped waiting for an ack it never showed (the CI failure of test_full_path)."""
    import asyncio

    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from fleet.control.models import DeviceCommand

    def commands() -> int:
        with fleet_db.reading() as s:
            return int(s.scalar(select(func.count()).select_from(DeviceCommand)) or 0)

    at_response: list[int] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        async def watched(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                at_response.append(await asyncio.to_thread(commands))
            await send(message)
        await fleet_app(scope, receive, watched if scope["type"] == "http" else send)

    with TestClient(app) as c:
        r = c.post(f"/api/v1/devices/{world.devices['flood-a']}/commands",
                   headers=world.headers("technician"),
                   json={"action": "write", "body": {"register": "stage2", "value": 1.25}})
    assert r.status_code == 201, r.text
    assert at_response == [1]
