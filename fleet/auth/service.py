"""Accounts, logins, tokens and the lockout policy. No HTTP here: the router translates.

- Passwords are hashed with argon2id (argon2-cffi); parameters come from the settings so a
  test can use a cheap profile while production keeps the RFC 9106 one.
- Tokens are random (``secrets.token_urlsafe``) and stored as HMAC-SHA256 under the fleet's
  secret key: the database alone cannot forge or reuse one.
- Lockout: :func:`lockout_decision` is a pure function over (failures, lock, now, policy).
- There is no default account. :func:`create_admin` makes one with a one-time password that
  must be changed before anything else works.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.audit.service import record
from fleet.auth.models import Token, User
from fleet.auth.rbac import ROLES, Principal, in_subtree
from fleet.core.db import utcnow
from fleet.core.errors import Conflict, FleetError, Forbidden, NotFound
from fleet.core.settings import Settings
from fleet.registry.models import Area

__all__ = [
    "LockoutPolicy",
    "LoginFailed",
    "change_password",
    "check_user_scope",
    "create_admin",
    "create_user",
    "hasher",
    "issue_token",
    "list_users",
    "lockout_decision",
    "login",
    "principal_for_token",
    "revoke_token",
]

log = logging.getLogger(__name__)


class LoginFailed(FleetError):
    status, code = 401, "login-failed"


class AccountLocked(FleetError):
    status, code = 423, "account-locked"


def hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(time_cost=settings.argon2_time_cost,
                          memory_cost=settings.argon2_memory_kib, parallelism=1)


def _token_hash(token: str, settings: Settings) -> str:
    key = settings.secret_key.get_secret_value().encode()
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()


def new_password() -> str:
    return secrets.token_urlsafe(18)


# -- the lockout policy (pure) -----------------------------------------------------------------
@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int
    lock_for: timedelta


@dataclass(frozen=True)
class LockState:
    failures: int
    locked_until: datetime | None


def lockout_decision(state: LockState, now: datetime, success: bool,
                     policy: LockoutPolicy) -> LockState:
    """The account's lock state after one login attempt at ``now``.

    A locked account stays locked (and a failure does not extend it); after the lock expires the
    count starts afresh; the ``max_failures``-th consecutive failure locks it."""
    if state.locked_until is not None and now < state.locked_until:
        return state
    failures = 0 if state.locked_until is not None else state.failures
    if success:
        return LockState(0, None)
    failures += 1
    if failures >= policy.max_failures:
        return LockState(0, now + policy.lock_for)
    return LockState(failures, None)


def is_locked(state: LockState, now: datetime) -> bool:
    return state.locked_until is not None and now < state.locked_until


# -- accounts ----------------------------------------------------------------------------------
def _check_role(role: str) -> None:
    if role not in ROLES:
        raise FleetError(f"unknown role {role!r}; roles are {', '.join(ROLES)}", status=422,
                         code="validation")


def create_user(session: Session, settings: Settings, *, username: str, password: str,
                role: str, area_id: int | None = None, fire_granted: bool = False,
                must_change_password: bool = False, actor: str = "system") -> User:
    _check_role(role)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} exists")
    if area_id is not None and session.get(Area, area_id) is None:
        raise NotFound(f"area {area_id} does not exist")
    user = User(username=username, password_hash=hasher(settings).hash(password), role=role,
                area_id=area_id, fire_granted=fire_granted,
                must_change_password=must_change_password)
    session.add(user)
    session.flush()
    record(session, actor, "user.created", "user", user.id,
           {"username": username, "role": role, "area_id": area_id,
            "fire_granted": fire_granted})
    return user


def check_user_scope(session: Session, admin: Principal, area_id: int | None) -> None:
    """May ``admin`` give a user the scope ``area_id``? Only inside their own subtree: a ward's
    admin cannot make a city-wide user (no area) or one for another ward."""
    if area_id is None:
        if not admin.is_root:
            raise Forbidden("only a city-wide admin may create a user without an area; "
                            "give area_id")
        return
    area = session.get(Area, area_id)
    if area is None or not in_subtree(admin.area_path, area.path):
        raise NotFound(f"area {area_id} not found")


def list_users(session: Session, admin: Principal) -> list[User]:
    query = select(User).order_by(User.id)
    if admin.area_path is not None:
        query = query.join(Area, User.area_id == Area.id).where(
            Area.path.startswith(admin.area_path, autoescape=True))
    return list(session.scalars(query))


def create_admin(session: Session, settings: Settings, username: str = "admin") -> str:
    """Make a city-wide admin (scoped to the root of the area tree) with a one-time password
    and return that password (shown once)."""
    password = new_password()
    create_user(session, settings, username=username, password=password, role="admin",
                area_id=None, must_change_password=True, actor="system:create-admin")
    return password


def change_password(session: Session, settings: Settings, user_id: int, old: str,
                    new: str) -> None:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    try:
        hasher(settings).verify(user.password_hash, old)
    except (VerificationError, InvalidHashError):
        raise LoginFailed("the current password is wrong") from None
    if len(new) < 12:
        raise FleetError("a password needs at least 12 characters", status=422,
                         code="weak-password")
    if new == old:
        raise FleetError("the new password must differ from the old one", status=422,
                         code="weak-password")
    user.password_hash = hasher(settings).hash(new)
    user.must_change_password = False
    record(session, f"user:{user.username}", "user.password_changed", "user", user.id)


# -- login and tokens --------------------------------------------------------------------------
@dataclass(frozen=True)
class LoginOutcome:
    token: str | None
    expires_at: datetime | None
    must_change_password: bool
    error: FleetError | None


def login(session: Session, settings: Settings, username: str, password: str,
          now: datetime | None = None) -> LoginOutcome:
    """One login attempt. Returns the outcome instead of raising so the caller commits the
    failure count before answering 401 (a rollback would undo the lockout)."""
    now = now or utcnow()
    policy = LockoutPolicy(settings.lockout_failures, timedelta(seconds=settings.lockout_s))
    user = session.scalar(select(User).where(User.username == username))
    ph = hasher(settings)
    if user is None or user.disabled:
        # Same work and same answer as a wrong password: no probing for usernames.
        _dummy_verify(ph, password)
        return LoginOutcome(None, None, False, LoginFailed("wrong username or password"))
    state = LockState(user.failed_logins, user.locked_until)
    if is_locked(state, now):
        return LoginOutcome(None, None, False, AccountLocked(
            "too many failed logins; the account is locked", locked_until=state.locked_until))
    try:
        ph.verify(user.password_hash, password)
        ok = True
    except (VerificationError, InvalidHashError):
        ok = False
    after = lockout_decision(state, now, ok, policy)
    user.failed_logins, user.locked_until = after.failures, after.locked_until
    if not ok:
        if is_locked(after, now):
            log.warning("account %s locked after %d failed logins", user.username,
                        policy.max_failures)
            record(session, f"user:{user.username}", "user.locked", "user", user.id,
                   {"until": after.locked_until.isoformat() if after.locked_until else None})
        return LoginOutcome(None, None, False, LoginFailed("wrong username or password"))
    if ph.check_needs_rehash(user.password_hash):
        user.password_hash = ph.hash(password)
    expires = now + timedelta(seconds=settings.session_ttl_s)
    token = issue_token(session, settings, user, kind="session", expires_at=expires)
    record(session, f"user:{user.username}", "user.login", "user", user.id)
    return LoginOutcome(token, expires, user.must_change_password, None)


_DUMMY: dict[tuple[int, int], str] = {}


def _dummy_verify(ph: PasswordHasher, password: str) -> None:
    key = (ph.time_cost, ph.memory_cost)
    if key not in _DUMMY:
        _DUMMY[key] = ph.hash(secrets.token_urlsafe(12))
    try:
        ph.verify(_DUMMY[key], password)
    except (VerificationError, InvalidHashError):
        pass


def issue_token(session: Session, settings: Settings, user: User, *, kind: str,
                name: str = "", expires_at: datetime | None = None) -> str:
    prefix = {"session": "efs_", "api": "efa_"}[kind]
    token = prefix + secrets.token_urlsafe(32)
    session.add(Token(user_id=user.id, kind=kind, name=name,
                      token_hash=_token_hash(token, settings), expires_at=expires_at))
    session.flush()
    if kind == "api":
        record(session, f"user:{user.username}", "token.created", "user", user.id,
               {"name": name})
    return token


def revoke_token(session: Session, token_id: int, user_id: int, actor: str) -> None:
    tok = session.get(Token, token_id)
    if tok is None or tok.user_id != user_id:
        raise NotFound(f"token {token_id} not found")
    if tok.revoked_at is None:
        tok.revoked_at = utcnow()
        record(session, actor, "token.revoked", "token", token_id)


def principal_for_token(session: Session, token: str, settings: Settings,
                        now: datetime | None = None) -> Principal | None:
    now = now or utcnow()
    row = session.execute(
        select(Token, User).join(User, User.id == Token.user_id)
        .where(Token.token_hash == _token_hash(token, settings))).first()
    if row is None:
        return None
    tok, user = row
    if tok.revoked_at is not None or user.disabled:
        return None
    if tok.expires_at is not None and now >= tok.expires_at:
        return None
    area_path = None
    if user.area_id is not None:
        area = session.get(Area, user.area_id)
        area_path = area.path if area is not None else "/-/"  # a deleted area sees nothing
    return Principal(user_id=user.id, username=user.username, role=user.role,
                     area_path=area_path, fire_granted=user.fire_granted, token_id=tok.id,
                     must_change_password=user.must_change_password)
