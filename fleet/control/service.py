"""Device commands: request (RBAC: the user must see the device and hold a role the action
allows), hand to the MQTT publisher (:func:`pending`, :func:`mark_sent`), and record the
gateway's ack (:func:`apply_ack`, for ingest's ``ack`` channel). No commit inside.

A threshold write is checked against the device class's register map (name, range) before
anything leaves the fleet, so an operator hears "out of range" at once rather than from the
gateway later; an ack counts only from the gateway the command went to."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from contracts.mqtt import AckPayload, command_topic, dumps
from fleet.audit.service import actor_gateway, record
from fleet.auth.rbac import Principal
from fleet.control.actions import ACTIONS
from fleet.control.models import DeviceCommand
from fleet.core.db import utcnow
from fleet.core.errors import FleetError, Forbidden
from fleet.registry.models import Device
from fleet.registry.service import get_device
from hardware.regmap import load_maps

__all__ = ["Outgoing", "apply_ack", "list_commands", "mark_sent", "pending", "request_command"]

log = logging.getLogger(__name__)


def request_command(session: Session, user: Principal, device_id: int, action: str,
                    body: dict[str, object]) -> DeviceCommand:
    device = get_device(session, user, device_id)  # 404 outside the user's area
    spec = ACTIONS.get(action)
    if spec is None:
        raise FleetError(f"unknown action {action!r}", status=422, code="validation")
    if user.role not in spec.roles:
        raise Forbidden(f"role {user.role!r} may not {spec.description}")
    try:
        clean = spec.body.model_validate(body).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise FleetError(f"{action}: {where}: {first['msg']}", status=422,
                         code="validation") from None
    if action == "write":
        _check_register(device.device_class, str(clean["register"]), float(clean["value"]))
    cmd = DeviceCommand(command_id=secrets.token_hex(8), device_id=device.id, action=action,
                        body=clean, state="pending", requested_by=user.user_id, error="")
    session.add(cmd)
    session.flush()
    record(session, f"user:{user.username}", "command.requested", "device", device.id,
           {"command_id": cmd.command_id, "action": action, "body": clean})
    return cmd


def _check_register(device_class: str, name: str, value: float) -> None:
    cmap = load_maps().classes.get(device_class)
    try:
        reg = cmap.holding_register(name) if cmap is not None else None
    except KeyError:
        reg = None
    if reg is None:
        raise FleetError(f"class {device_class} has no holding register {name!r}", status=422,
                         code="validation")
    if reg.minimum is not None and reg.maximum is not None \
            and not reg.minimum <= value <= reg.maximum:
        raise FleetError(f"{name}={value:g} is outside {reg.minimum:g}–{reg.maximum:g} "
                         f"{reg.unit}".rstrip(), status=422, code="validation")


def list_commands(session: Session, user: Principal, device_id: int) -> list[DeviceCommand]:
    get_device(session, user, device_id)
    return list(session.scalars(select(DeviceCommand).where(
        DeviceCommand.device_id == device_id).order_by(DeviceCommand.id.desc()).limit(100)))


@dataclass(frozen=True)
class Outgoing:
    id: int
    topic: str
    payload: bytes


#: Per action: what a command carries on the wire but never in the database (an OTA start's
#: download token), computed when it is published.
WireFields = Callable[[Session, DeviceCommand], dict[str, Any]]


def pending(session: Session, limit: int = 100,
            wire: Mapping[str, WireFields] | None = None) -> list[Outgoing]:
    """Commands waiting to be published (QoS 1) to their gateway's ``cmd/`` topic."""
    rows = session.execute(
        select(DeviceCommand, Device).join(Device, Device.id == DeviceCommand.device_id)
        .where(DeviceCommand.state == "pending").order_by(DeviceCommand.id).limit(limit)).all()
    wire = wire or {}

    def extra(cmd: DeviceCommand) -> dict[str, Any]:
        fill = wire.get(cmd.action)
        return fill(session, cmd) if fill is not None else {}

    return [Outgoing(cmd.id, command_topic(dev.gateway.key, dev.key, cmd.action),
                     dumps({"id": cmd.command_id, **cmd.body, **extra(cmd)}))
            for cmd, dev in rows]


def mark_sent(session: Session, ids: list[int], at: datetime | None = None) -> None:
    """After the broker's PUBACK: the commands are on their way."""
    session.execute(update(DeviceCommand).where(DeviceCommand.id.in_(ids),
                                                DeviceCommand.state == "pending")
                    .values(state="sent", sent_at=at or utcnow())
                    .execution_options(synchronize_session=False))


def apply_ack(session: Session, gateway_id: str, payload: AckPayload) -> DeviceCommand | None:
    """The gateway's ack: ok or the reason it failed. Unknown or repeated acks change nothing."""
    if payload.id is None:
        return None
    cmd = session.scalar(select(DeviceCommand).where(DeviceCommand.command_id == payload.id))
    if cmd is None or cmd.state in ("ok", "failed"):
        return cmd
    device = session.get(Device, cmd.device_id)
    if device is None or device.gateway.key != gateway_id:
        log.warning("ack for command %s came from %s, not from its device's gateway",
                    cmd.command_id, gateway_id)
        return None
    cmd.state = "ok" if payload.ok else "failed"
    cmd.acked_at = payload.ts or utcnow()
    cmd.error = payload.error or ""
    record(session, actor_gateway(gateway_id), f"command.{cmd.state}", "device", cmd.device_id,
           {"command_id": cmd.command_id, "action": cmd.action, "error": cmd.error})
    if not payload.ok:
        log.warning("command %s (%s) failed on gateway %s: %s", cmd.command_id, cmd.action,
                    gateway_id, cmd.error)
    return cmd
