"""HTTP for auth: login, password change, who am I, users (admins) and API tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from sqlalchemy import select

from fleet.auth import service
from fleet.auth.models import Token, User
from fleet.auth.rbac import Permission, Principal
from fleet.auth.schemas import (
    ApiTokenCreate,
    ApiTokenOut,
    LoginIn,
    LoginOut,
    MeOut,
    PasswordChange,
    UserCreate,
    UserCreated,
    UserOut,
)
from fleet.core.deps import CurrentUser, DatabaseDep, PendingUser, SessionDep, SettingsDep, require
from fleet.core.types import IdPath

router = APIRouter(prefix="/auth", tags=["auth"])
Admin = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]


@router.post("/login", response_model=LoginOut)
def login(body: LoginIn, db: DatabaseDep, settings: SettingsDep) -> LoginOut:
    # Its own transaction: a failed attempt's count must commit even though we answer 401.
    with db.transaction() as session:
        outcome = service.login(session, settings, body.username, body.password)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.token is not None
    return LoginOut(access_token=outcome.token, expires_at=outcome.expires_at,
                    must_change_password=outcome.must_change_password)


@router.post("/password", status_code=status.HTTP_204_NO_CONTENT)
def change_password(body: PasswordChange, user: PendingUser, session: SessionDep,
                    settings: SettingsDep) -> None:
    service.change_password(session, settings, user.user_id, body.old_password,
                            body.new_password)


@router.get("/me", response_model=MeOut)
def me(user: CurrentUser) -> MeOut:
    return MeOut(id=user.user_id, username=user.username, role=user.role,
                 area_path=user.area_path, fire_granted=user.fire_granted)


@router.get("/users", response_model=list[UserOut])
def list_users(admin: Admin, session: SessionDep) -> list[User]:
    """The users whose scope lies inside the admin's (a city-wide admin: everyone)."""
    return service.list_users(session, admin)


@router.post("/users", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
def create_user(body: UserCreate, admin: Admin, session: SessionDep,
                settings: SettingsDep) -> UserCreated:
    service.check_user_scope(session, admin, body.area_id)
    password = service.new_password()
    user = service.create_user(session, settings, username=body.username, password=password,
                               role=body.role, area_id=body.area_id,
                               fire_granted=body.fire_granted, must_change_password=True,
                               actor=f"user:{admin.username}")
    return UserCreated(**UserOut.model_validate(user).model_dump(), one_time_password=password)


@router.post("/tokens", response_model=ApiTokenOut, status_code=status.HTTP_201_CREATED)
def create_api_token(body: ApiTokenCreate, user: CurrentUser, session: SessionDep,
                     settings: SettingsDep) -> ApiTokenOut:
    """A token for a machine (a SCADA bridge, a script), acting as the calling user."""
    owner = session.get(User, user.user_id)
    assert owner is not None
    token = service.issue_token(session, settings, owner, kind="api", name=body.name)
    tok_id = session.scalar(select(Token.id).where(Token.user_id == owner.id)
                            .order_by(Token.id.desc()).limit(1))
    assert tok_id is not None
    return ApiTokenOut(id=tok_id, name=body.name, token=token)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_api_token(token_id: IdPath, user: CurrentUser, session: SessionDep) -> None:
    service.revoke_token(session, token_id, user.user_id, f"user:{user.username}")
