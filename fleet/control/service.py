"""Device commands as data and the audit rows that record them. No MQTT and no HTTP here.

:data:`COMMANDS` says which actions the fleet sends and how each body is checked; a threshold
write is checked against the device class's register map (name, range) before anything leaves
the fleet, so an operator hears "out of range" at once rather than from the gateway later.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.mqtt import AckPayload
from fleet.audit.models import AuditEntry
from fleet.audit.service import actor_gateway, record
from fleet.core.errors import FleetError
from fleet.registry.models import Device
from hardware.regmap import load_maps

__all__ = ["COMMANDS", "CommandError", "CommandView", "check_body", "list_for_device",
           "new_command_id", "record_ack", "record_sent", "record_unsent"]

log = logging.getLogger(__name__)
ENTITY = "command"


class CommandError(FleetError):
    """A command the fleet refuses to send (unknown action, bad register or value)."""

    status = 422
    code = "bad-command"


def _reset(_device_class: str, _body: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _write(device_class: str, body: Mapping[str, Any]) -> dict[str, Any]:
    name, value = body.get("register"), body.get("value")
    if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int | float) \
            or value != value:
        raise CommandError('write needs "register" (a holding register name) and "value" '
                           "(a number in engineering units)")
    cmap = load_maps().classes.get(device_class)
    try:
        reg = cmap.holding_register(name) if cmap is not None else None
    except KeyError:
        reg = None
    if reg is None:
        raise CommandError(f"class {device_class} has no holding register {name!r}")
    if reg.minimum is not None and reg.maximum is not None \
            and not reg.minimum <= value <= reg.maximum:
        raise CommandError(f"{name}={value} is outside {reg.minimum:g}–{reg.maximum:g} "
                           f"{reg.unit}".rstrip())
    return {"register": name, "value": value}


#: action -> body check (returns the body to send, raises CommandError). The gateway knows more
#: actions (coil, reboot, repoll); these are the ones an operator sends from the dashboard.
COMMANDS: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "reset": _reset,
    "write": _write,
}


def check_body(device_class: str, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    check = COMMANDS.get(action)
    if check is None:
        raise CommandError(f"unknown action {action!r}; one of {', '.join(COMMANDS)}")
    return check(device_class, body)


def new_command_id(device_id: int) -> str:
    """``<device id>-<random>``: unique, and one device's commands share a prefix."""
    return f"{device_id}-{uuid.uuid4().hex[:16]}"


def record_sent(session: Session, actor: str, device: Device, command_id: str, action: str,
                body: Mapping[str, Any]) -> None:
    record(session, actor, "command.sent", ENTITY, command_id,
           {"device_id": device.id, "gateway": device.gateway.key, "device": device.key,
            "action": action, "body": dict(body)})


def record_unsent(session: Session, command_id: str, reason: str) -> None:
    record(session, "system", "command.failed", ENTITY, command_id,
           {"ok": False, "error": f"not sent: {reason}"})


def record_ack(session: Session, gateway: str, payload: object) -> None:
    """The gateway's answer (ingest's handler for the ``ack`` channel). Idempotent: a
    redelivered ack, or one for a command this fleet never sent, changes nothing."""
    assert isinstance(payload, AckPayload)
    if not payload.id:
        return
    rows = list(session.scalars(select(AuditEntry).where(
        AuditEntry.entity_type == ENTITY, AuditEntry.entity_id == payload.id)))
    sent = [r for r in rows if r.action == "command.sent"]
    if not sent or len(rows) > len(sent):
        if not sent:
            log.info("ack from %s for unknown command %s ignored", gateway, payload.id)
        return
    if sent[0].detail.get("gateway") != gateway:
        log.warning("ack for command %s came from %s, not from its gateway %s", payload.id,
                    gateway, sent[0].detail.get("gateway"))
        return
    record(session, actor_gateway(gateway), "command.acked" if payload.ok else "command.failed",
           ENTITY, payload.id, {"ok": payload.ok, "error": payload.error})


@dataclass(frozen=True)
class CommandView:
    id: str
    action: str
    body: dict[str, Any]
    actor: str
    sent_at: datetime
    ok: bool | None
    error: str | None
    answered_at: datetime | None


def list_for_device(session: Session, device_id: int, limit: int = 20) -> list[CommandView]:
    """The device's latest commands, newest first, each with its answer if one came."""
    rows = list(session.scalars(select(AuditEntry).where(
        AuditEntry.entity_type == ENTITY,
        AuditEntry.entity_id.startswith(f"{device_id}-", autoescape=True))
        .order_by(AuditEntry.id.desc()).limit(limit * 3)))
    answers = {r.entity_id: r for r in rows if r.action != "command.sent"}
    out = []
    for r in rows:
        if r.action != "command.sent":
            continue
        answer = answers.get(r.entity_id)
        out.append(CommandView(
            id=r.entity_id, action=str(r.detail.get("action", "")),
            body=dict(r.detail.get("body", {})), actor=r.actor, sent_at=r.at,
            ok=None if answer is None else bool(answer.detail.get("ok")),
            error=None if answer is None else answer.detail.get("error"),
            answered_at=None if answer is None else answer.at))
    return out[:limit]
