"""HTTP for device commands: ``POST /devices/{id}/commands`` sends one (roles that may change
the registry: admin, technician), ``GET /devices/{id}/commands`` lists the latest with the
gateway's answers. Thin: the checks are :mod:`fleet.control.service`'s."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts.mqtt import command_topic
from fleet.auth.rbac import Permission, Principal
from fleet.control import service
from fleet.control.publish import BrokerUnavailable, publish_command
from fleet.core.deps import SessionDep, SettingsDep, require
from fleet.core.types import NO_NUL, IdPath
from fleet.registry.service import get_device

router = APIRouter(tags=["commands"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]
#: Who may send commands: the roles that may change the registry (admin, technician).
Operator = Annotated[Principal, Depends(require(Permission.MANAGE_REGISTRY))]


class ResetIn(BaseModel):
    """Clear the device's latched alarm (the firmware's reset command register)."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["reset"]


class WriteIn(BaseModel):
    """Write one holding register (a threshold) in engineering units; the name and the range
    are the device class's (hardware/registers/<class>.toml), checked before sending."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["write"]
    register: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    value: float = Field(allow_inf_nan=False)


CommandIn = Annotated[ResetIn | WriteIn, Field(discriminator="action")]


class CommandOut(BaseModel):
    id: str
    action: str
    body: dict[str, Any]
    actor: str
    sent_at: datetime
    #: The gateway's answer: None while none has come.
    ok: bool | None
    error: str | None
    answered_at: datetime | None


@router.post("/devices/{device_id}/commands", response_model=CommandOut,
             status_code=status.HTTP_202_ACCEPTED,
             responses={409: {"description": "no broker is configured (audited)"},
                        503: {"description": "the broker did not take the command (audited)"}})
def send_command(request: Request, device_id: IdPath, body: CommandIn, user: Operator,
                 session: SessionDep, settings: SettingsDep) -> CommandOut | JSONResponse:
    """Accepted once the broker has it; the gateway's answer shows in the list later.

    One transaction (the request's, which authentication already opened: on SQLite a second
    one would wait for it): the command is recorded, published, and a failure to publish is
    recorded too and answered 503 by *returning* the problem, so the audit rows still commit."""
    device = get_device(session, user, device_id)
    payload = service.check_body(device.device_class, body.action,
                                 body.model_dump(exclude={"action"}))
    command_id = service.new_command_id(device.id)
    service.record_sent(session, f"user:{user.username}", device, command_id, body.action,
                        payload)
    topic = command_topic(device.gateway.key, device.key, body.action)
    try:
        publish_command(settings.ingest, topic, {"id": command_id, **payload})
    except BrokerUnavailable as exc:
        service.record_unsent(session, command_id, exc.detail)
        problem = exc.problem(str(request.url.path))
        return JSONResponse(problem.model_dump(exclude_none=True), status_code=exc.status,
                            media_type="application/problem+json")
    session.flush()
    sent = service.list_for_device(session, device_id)
    return CommandOut(**next(c for c in sent if c.id == command_id).__dict__)


@router.get("/devices/{device_id}/commands", response_model=list[CommandOut])
def list_commands(device_id: IdPath, user: Reader, session: SessionDep) -> list[CommandOut]:
    get_device(session, user, device_id)  # 404 outside the caller's scope
    return [CommandOut(**c.__dict__) for c in service.list_for_device(session, device_id)]
