"""HTTP for device commands: send one, list a device's commands with their acks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from fleet.auth.rbac import Permission, Principal
from fleet.control import service
from fleet.control.models import DeviceCommand
from fleet.control.schemas import CommandIn, CommandOut
from fleet.core.deps import SessionDep, require
from fleet.core.types import IdPath

router = APIRouter(prefix="/devices/{device_id}/commands", tags=["control"])
Reader = Annotated[Principal, Depends(require(Permission.READ))]


@router.post("", response_model=CommandOut, status_code=status.HTTP_201_CREATED)
def send_command(device_id: IdPath, body: CommandIn, user: Reader,
                 session: SessionDep) -> DeviceCommand:
    """Queue a command for the device's gateway (the role check is per action)."""
    return service.request_command(session, user, device_id, body.action,
                                   body.body.model_dump())


@router.get("", response_model=list[CommandOut])
def list_commands(device_id: IdPath, user: Reader, session: SessionDep) -> list[DeviceCommand]:
    return service.list_commands(session, user, device_id)
