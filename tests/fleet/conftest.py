"""Fleet fixtures: a real PostgreSQL server (Debian's postgresql 15) and SQLite, both migrated
with the project's Alembic revisions, and a ``db_url`` parametrised over the two so a suite runs
against each.

One PostgreSQL cluster per test session (initdb + pg_ctl on a free loopback port, ~2 s); one
database per test, copied from a migrated template (CREATE DATABASE ... TEMPLATE), so every test
starts on a fresh schema without paying for the migrations again. As root, initdb and the server
refuse to run, so they run as the ``postgres`` user via ``runuser`` (FIELD-NOTES).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("EDGEFLEET_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "edgefleet"
TEMPLATE = "fleet_template"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """A throwaway PostgreSQL cluster; ``url(db)`` for SQLAlchemy, ``admin(sql)`` for DDL."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"PostgreSQL server programs not found in {PG_BIN}: run "
                        "scripts/system-deps.sh (Debian package postgresql)", pytrace=False)
        self.root = Path(tempfile.mkdtemp(prefix="edgefleet-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)

    def start(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                                     "-U", PG_USER, "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True)
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
                                     "-l", str(self.log), "-w", "start"]),
                       check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    from fleet.core.migrate import upgrade

    server = PostgresServer()
    server.start()
    try:
        server.admin(f"CREATE DATABASE {TEMPLATE}")
        upgrade(server.url(TEMPLATE))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fleet.core.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "fleet.db"
    upgrade(f"sqlite:///{path}")
    return path


_db_counter = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty fleet database: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "fleet.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t{os.getpid()}_{next(_db_counter)}"
    server.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield server.url(name)
    finally:
        server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database only (for tests about PostgreSQL behaviour: row locks)."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    postgres.admin(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    try:
        yield postgres.url(name)
    finally:
        postgres.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def empty_database_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An empty database of ``kind`` ("sqlite" or "postgresql") with no revision applied, for a
    test that migrates it to an old revision itself: an SQLite file in ``tmp_path``, or a new
    database on the session's PostgreSQL server, dropped when the test ends."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}: 'sqlite' or 'postgresql'")
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"empty_{os.getpid()}_{next(_db_counter)}"
    server.admin(f"CREATE DATABASE {name}")
    request.addfinalizer(lambda: server.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    return server.url(name)


def settings_for(url: str, tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """Settings on a test database: a random secret, a cheap argon2 profile (the production
    profile costs 64 MiB and ~100 ms per hash), and no escalation timer unless a test asks."""
    from fleet.core.settings import Settings

    values: dict[str, object] = {
        "data_dir": tmp_path / "data", "database_url": url,
        "secret_key": secrets.token_urlsafe(48), "argon2_time_cost": 1,
        "argon2_memory_kib": 1024, "run_timers": False}
    return Settings(**{**values, **overrides})


@pytest.fixture
def fleet_settings(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return settings_for(db_url, tmp_path)


@pytest.fixture
def fleet_db(fleet_settings):  # type: ignore[no-untyped-def]
    from fleet.core.db import Database

    db = Database.from_url(fleet_settings.database_url)
    yield db
    db.dispose()


@pytest.fixture
def fleet_app(fleet_settings, fleet_db):  # type: ignore[no-untyped-def]
    from fleet.app import create_app

    return create_app(fleet_settings, database=fleet_db)


@pytest.fixture
def client(fleet_app):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(fleet_app) as c:
        yield c


# -- a small city to test against --------------------------------------------------------------
class World:
    """HCMC since 2025: the city and two wards under it (no districts); one site per ward, each
    with a gateway, a fire detector and one other sensor; one user per role scoped to ward A
    (admin: the whole city; plus ward A's own admin and a utility user granted fire), and a
    session token for each."""

    def __init__(self, db, settings) -> None:  # type: ignore[no-untyped-def]
        from fleet.auth import service as auth
        from fleet.auth.models import Token, User
        from fleet.auth.rbac import Principal
        from fleet.registry import service as reg

        root = Principal(user_id=0, username="setup", role="admin", area_path=None)
        self.tokens: dict[str, str] = {}
        with db.transaction() as s:
            city = reg.create_area(s, name="Thành phố Hồ Chí Minh", kind="city")
            ward_a = reg.create_area(s, name="Phường Bến Thành", kind="ward", parent_id=city.id)
            ward_b = reg.create_area(s, name="Phường Sài Gòn", kind="ward", parent_id=city.id)
            self.city, self.ward_a, self.ward_b = city.id, ward_a.id, ward_b.id
            site_a = reg.create_site(s, root, name="Chợ Bến Thành", area_id=ward_a.id,
                                     latitude=10.7725, longitude=106.6980)
            site_b = reg.create_site(s, root, name="Nhà hát Thành phố", area_id=ward_b.id,
                                     latitude=10.7767, longitude=106.7031)
            self.site_a, self.site_b = site_a.id, site_b.id
            gw_a = reg.create_gateway(s, root, key="gw-a", site_id=site_a.id)
            gw_b = reg.create_gateway(s, root, key="gw-b", site_id=site_b.id)
            self.gw_a, self.gw_b = gw_a.id, gw_b.id
            self.devices: dict[str, int] = {}
            for gw, site, key, cls in ((gw_a, site_a, "fire-a", "fire"),
                                       (gw_a, site_a, "flood-a", "flood"),
                                       (gw_b, site_b, "fire-b", "fire"),
                                       (gw_b, site_b, "water-b", "water")):
                dev = reg.create_device(s, root, gateway_id=gw.id, key=key, device_class=cls,
                                        site_id=site.id, address=len(self.devices) + 1)
                self.devices[key] = dev.id
            users = [("admin", "admin", None, False), ("ward-admin", "admin", ward_a.id, False)] + [
                (role, role, ward_a.id, False)
                for role in ("technician", "utility", "fire-safety", "viewer")] + [
                ("utility-fire", "utility", ward_a.id, True)]
            for name, role, area, fire in users:
                auth.create_user(s, settings, username=name, password=f"pw-{name}-0123456789",
                                 role=role, area_id=area, fire_granted=fire)
            s.flush()
            for name, *_ in users:
                user = s.query(User).filter_by(username=name).one()
                self.tokens[name] = auth.issue_token(s, settings, user, kind="session")
            # a spare admin API token, for tests that revoke one
            admin = s.query(User).filter_by(username="admin").one()
            auth.issue_token(s, settings, admin, kind="api", name="spare")
            self.admin_token_id = max(t.id for t in s.query(Token).filter_by(user_id=admin.id))

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def world(fleet_db, fleet_settings) -> World:  # type: ignore[no-untyped-def]
    return World(fleet_db, fleet_settings)


def alarm_payload(device: str, alarm_id: str, state: str = "raised", cls: str = "fire",
                  seq: int = 1, ts: str = "2026-12-02T05:00:00Z", type_: str = "smoke"):  # type: ignore[no-untyped-def]
    from contracts.mqtt import AlarmPayload

    return AlarmPayload.model_validate({
        "device": device, "class": cls, "ts": ts, "epoch": "e1", "seq": seq,
        "alarm_id": alarm_id, "type": type_, "state": state, "severity": "critical"})
