"""Request and response bodies of the auth API (never the table classes themselves)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.core.types import NO_NUL, Id

__all__ = ["ApiTokenCreate", "ApiTokenOut", "LoginIn", "LoginOut", "MeOut", "PasswordChange",
           "UserCreate", "UserCreated", "UserOut"]


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=1000, pattern=NO_NUL)


class LoginOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: datetime | None
    must_change_password: bool


class PasswordChange(BaseModel):
    old_password: str = Field(min_length=1, max_length=1000, pattern=NO_NUL)
    new_password: str = Field(min_length=12, max_length=1000, pattern=NO_NUL)


class MeOut(BaseModel):
    id: int
    username: str
    role: str
    area_path: str | None
    fire_granted: bool


#: The roles of fleet.auth.rbac.Role, for the OpenAPI (a test keeps the two equal).
RoleName = Literal["admin", "technician", "utility", "fire-safety", "viewer"]


class UserCreate(BaseModel):
    # JSON Schema's regex semantics (a final newline before `$`), as clients read the pattern.
    model_config = ConfigDict(regex_engine="python-re")

    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")

    @field_validator("username")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("\n")
    role: RoleName
    area_id: Id | None = None
    fire_granted: bool = False


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    username: str
    role: str
    area_id: int | None
    fire_granted: bool
    disabled: bool
    locked_until: datetime | None


class UserCreated(UserOut):
    #: Shown once; the user must change it at first login.
    one_time_password: str


class ApiTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)


class ApiTokenOut(BaseModel):
    id: int
    name: str
    token: str
