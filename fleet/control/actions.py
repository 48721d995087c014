"""The device commands the gateway executes, said once as data: action -> body model and the
roles that may send it. The gateway's own table is ``gateway.service.COMMANDS``; a test keeps the
two in step (the fleet may not import the gateway)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from fleet.core.types import NO_NUL

__all__ = ["ACTIONS", "ActionSpec", "CoilBody", "EmptyBody", "WriteBody"]


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WriteBody(BaseModel):
    """Write a holding register (a threshold) in engineering units."""

    model_config = ConfigDict(extra="forbid")
    register: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    value: float


class CoilBody(BaseModel):
    """Drive a coil (a siren, a valve)."""

    model_config = ConfigDict(extra="forbid")
    coil: int = Field(default=0, ge=0, le=65535)
    value: bool = Field(strict=True)


@dataclass(frozen=True)
class ActionSpec:
    body: type[BaseModel]
    roles: frozenset[str]
    description: str


_OPS = frozenset({"admin", "technician"})
ACTIONS: dict[str, ActionSpec] = {
    "reset": ActionSpec(EmptyBody, _OPS | {"fire-safety"}, "reset a latched alarm"),
    "repoll": ActionSpec(EmptyBody, _OPS | {"fire-safety", "utility"}, "read the device now"),
    "write": ActionSpec(WriteBody, _OPS, "write a holding register (a threshold)"),
    "coil": ActionSpec(CoilBody, _OPS, "drive a coil"),
    "reboot": ActionSpec(EmptyBody, _OPS, "reboot the device"),
}
