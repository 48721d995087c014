"""FastAPI dependencies shared by every router: the database session, the current user and the
role guard, as ``Annotated`` aliases so a route reads ``session: SessionDep, user: CurrentUser``.

The session is one unit of work per request: committed when the route returns, rolled back when
it raises. The commit happens before the response is sent (``scope="function"``; FastAPI's default
for a dependency with yield closes it after the response): a client that reads right after a 201
sees what it created, and a commit that fails is a 500, never a 201 for something not stored.
Routes never commit on their own. GET and HEAD requests get a read-only session (nothing they do
is committed; on SQLite they take no write lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from fleet.auth.rbac import Permission, Principal, permits
from fleet.auth.service import principal_for_token
from fleet.core.db import Database
from fleet.core.errors import Forbidden, Unauthorized
from fleet.core.settings import Settings

__all__ = ["CurrentUser", "DatabaseDep", "PendingUser", "SessionDep", "SettingsDep", "require"]

_bearer = HTTPBearer(auto_error=False, description="a session token from /auth/login or an "
                                                   "API token")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_session(request: Request,
                db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    # GET and HEAD never change state (the RBAC and fuzz tests hold routes to that), so they
    # read without taking SQLite's write lock; anything else is one write transaction.
    if request.method in ("GET", "HEAD"):
        with db.reading() as session:
            yield session
        return
    with db.transaction() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_authenticated(
    session: SessionDep, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("a bearer token is required")
    principal = principal_for_token(session, credentials.credentials, settings)
    if principal is None:
        raise Unauthorized("the token is unknown, expired or revoked")
    return principal


#: The caller even if their password is a one-time one (only the password change takes this).
PendingUser = Annotated[Principal, Depends(get_authenticated)]


def get_current_user(user: PendingUser) -> Principal:
    if user.must_change_password:
        raise Forbidden("change the one-time password first (POST /api/v1/auth/password)",
                        code="password-change-required")
    return user


CurrentUser = Annotated[Principal, Depends(get_current_user)]


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets the request through only for roles holding ``permission`` (and,
    for a root-only permission, only for users scoped to the whole tree).

    Area scoping is the service's job (it filters lists and answers 404 for objects outside
    the user's subtree); this guard answers 403 for actions the role may never take."""

    def guard(user: CurrentUser) -> Principal:
        if not permits(user, permission):
            scope = "" if user.is_root else " outside the whole-city scope"
            raise Forbidden(f"role {user.role!r} may not {permission.value}{scope}")
        return user

    return guard
