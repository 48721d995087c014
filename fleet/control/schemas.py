"""Request and response bodies of the device-command API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.control.actions import CoilBody, EmptyBody, WriteBody

__all__ = ["CommandIn", "CommandOut"]


class _Plain(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["reset", "repoll", "reboot"]
    body: EmptyBody = Field(default_factory=EmptyBody)


class _Write(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["write"]
    body: WriteBody


class _Coil(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["coil"]
    body: CoilBody


#: One schema per action (a discriminated union), so the OpenAPI says exactly what each takes.
CommandIn = Annotated[_Plain | _Write | _Coil, Field(discriminator="action")]


class CommandOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    command_id: str
    device_id: int
    action: str
    body: dict[str, Any]
    state: str
    requested_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    error: str
