"""Auth on SQLite and PostgreSQL: no default account, one-time admin password, argon2 hashes,
session and API tokens, lockout after repeated failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from fleet.auth import service
from fleet.auth.models import Token, User
from fleet.auth.service import LockoutPolicy, LockState, lockout_decision

T0 = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
POLICY = LockoutPolicy(max_failures=3, lock_for=timedelta(minutes=15))


@pytest.mark.parametrize("state, at, success, expected", [
    (LockState(0, None), T0, False, LockState(1, None)),
    (LockState(1, None), T0, False, LockState(2, None)),
    (LockState(2, None), T0, False, LockState(0, T0 + timedelta(minutes=15))),
    (LockState(2, None), T0, True, LockState(0, None)),
    # locked: neither a right nor a wrong password changes anything, nor extends the lock
    (LockState(0, T0), T0 - timedelta(minutes=1), True, LockState(0, T0)),
    (LockState(0, T0), T0 - timedelta(minutes=1), False, LockState(0, T0)),
    # the lock has expired: counting starts afresh
    (LockState(0, T0), T0, False, LockState(1, None)),
    (LockState(0, T0), T0 + timedelta(seconds=1), True, LockState(0, None)),
])
def test_lockout_policy(state: LockState, at: datetime, success: bool,
                        expected: LockState) -> None:
    assert lockout_decision(state, at, success, POLICY) == expected


def test_a_fresh_fleet_has_no_account_to_log_into(client, fleet_db) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        assert s.scalar(select(User.id)) is None
    for user, pw in (("admin", "admin"), ("admin", ""), ("root", "root")):
        r = client.post("/api/v1/auth/login", json={"username": user, "password": pw or "x"})
        assert r.status_code == 401


def test_create_admin_password_works_once_then_must_be_changed(client, fleet_db,  # type: ignore[no-untyped-def]
                                                                fleet_settings) -> None:
    with fleet_db.transaction() as s:
        otp = service.create_admin(s, fleet_settings, "chief")
    assert len(otp) >= 20
    r = client.post("/api/v1/auth/login", json={"username": "chief", "password": otp})
    assert r.status_code == 200 and r.json()["must_change_password"] is True
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = client.get("/api/v1/devices", headers=auth)
    assert r.status_code == 403 and r.json()["type"].endswith("password-change-required")
    r = client.post("/api/v1/auth/password", headers=auth,
                    json={"old_password": otp, "new_password": "a much longer passphrase"})
    assert r.status_code == 204
    assert client.get("/api/v1/devices", headers=auth).status_code == 200
    # the city's admin: scoped to the root of the area tree, so the root-only parts open
    assert client.get("/api/v1/auth/me", headers=auth).json()["area_path"] is None
    assert client.get("/api/v1/audit", headers=auth).status_code == 200
    r = client.post("/api/v1/auth/login", json={"username": "chief", "password": otp})
    assert r.status_code == 401


def test_a_wards_admin_manages_the_wards_users_only(client, world) -> None:  # type: ignore[no-untyped-def]
    listed = client.get("/api/v1/auth/users", headers=world.headers("ward-admin")).json()
    names = {u["username"] for u in listed}
    assert "admin" not in names  # the city's admin is outside ward A's scope
    assert {"ward-admin", "technician", "fire-safety", "viewer"} <= names
    everyone = client.get("/api/v1/auth/users", headers=world.headers("admin")).json()
    assert len(everyone) > len(listed)
    # a ward admin cannot mint a city-wide user, nor one for the next ward
    for area in (None, world.ward_b):
        r = client.post("/api/v1/auth/users", headers=world.headers("ward-admin"),
                        json={"username": f"x{area}", "role": "admin", "area_id": area})
        assert r.status_code in (403, 404), r.text
    r = client.post("/api/v1/auth/users", headers=world.headers("ward-admin"),
                    json={"username": "tech-a2", "role": "technician",
                          "area_id": world.ward_a})
    assert r.status_code == 201


def test_passwords_are_argon2id_and_tokens_are_not_stored_in_clear(client, world,  # type: ignore[no-untyped-def]
                                                                    fleet_db) -> None:
    with fleet_db.transaction() as s:
        hashes = s.scalars(select(User.password_hash)).all()
        stored = set(s.scalars(select(Token.token_hash)).all())
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert not any("pw-" in h for h in hashes)
    assert not set(world.tokens.values()) & stored


def test_login_then_bearer_token_then_logout_by_revoking(client, world) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/auth/login",
                    json={"username": "technician", "password": "pw-technician-0123456789"})
    assert r.status_code == 200
    auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
    me = client.get("/api/v1/auth/me", headers=auth).json()
    assert me["username"] == "technician" and me["area_path"] == f"/{world.city}/{world.ward_a}/"


def test_an_api_token_for_a_machine_works_until_revoked(client, world) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v1/auth/tokens", headers=world.headers("utility"),
                    json={"name": "scada-bridge"})
    assert r.status_code == 201
    machine = {"Authorization": f"Bearer {r.json()['token']}"}
    assert client.get("/api/v1/auth/me", headers=machine).json()["username"] == "utility"
    assert client.delete(f"/api/v1/auth/tokens/{r.json()['id']}",
                         headers=world.headers("utility")).status_code == 204
    assert client.get("/api/v1/auth/me", headers=machine).status_code == 401


def test_a_session_token_expires(fleet_db, fleet_settings, world) -> None:  # type: ignore[no-untyped-def]
    with fleet_db.transaction() as s:
        outcome = service.login(s, fleet_settings, "viewer", "pw-viewer-0123456789", now=T0)
    assert outcome.token is not None
    later = T0 + timedelta(seconds=fleet_settings.session_ttl_s)
    with fleet_db.transaction() as s:
        assert service.principal_for_token(s, outcome.token, fleet_settings,
                                           now=later - timedelta(seconds=1)) is not None
        assert service.principal_for_token(s, outcome.token, fleet_settings, now=later) is None


def test_repeated_wrong_passwords_lock_the_account_even_for_the_right_one(  # type: ignore[no-untyped-def]
        client, world, fleet_db) -> None:
    for _ in range(5):  # default policy: 5 failures
        r = client.post("/api/v1/auth/login",
                        json={"username": "viewer", "password": "guess"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/login",
                    json={"username": "viewer", "password": "pw-viewer-0123456789"})
    assert r.status_code == 423 and r.headers["content-type"] == "application/problem+json"
    with fleet_db.transaction() as s:
        actions = s.execute(text("SELECT action FROM audit_log WHERE action = 'user.locked'"))
        assert len(actions.all()) == 1


def test_a_user_on_an_unknown_role_is_refused(fleet_db, fleet_settings) -> None:  # type: ignore[no-untyped-def]
    from fleet.core.errors import FleetError

    with pytest.raises(FleetError, match="unknown role"), fleet_db.transaction() as s:
        service.create_user(s, fleet_settings, username="x", password="p" * 12, role="root")


def test_the_api_schema_names_exactly_the_roles_rbac_knows() -> None:
    from typing import get_args

    from fleet.auth.rbac import ROLES
    from fleet.auth.schemas import RoleName

    assert set(get_args(RoleName)) == set(ROLES)
