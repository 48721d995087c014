"""Device commands: request (RBAC: the user must see the device and hold a role the action
allows), hand to the MQTT publisher (:func:`claim`, :func:`mark_sent`, :func:`release`), and
record the gateway's ack (:func:`apply_ack`, for ingest's ``ack`` channel). No commit inside.

Several replicas publish from one database, so a pending command is *claimed* before it is
published: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (a second replica skips the rows
the first is claiming instead of waiting for them), SQLite's single writer (BEGIN IMMEDIATE)
elsewhere, then a conditional ``UPDATE ... WHERE state = 'pending' AND the claim is free``, so
of two replicas racing for a row exactly one gets it. The claim is a lease: a replica that dies
between claiming and publishing leaves a claim that another replica takes over once
:data:`CLAIM_LEASE` has passed. The publisher stops publishing a batch before its lease could
run out (:func:`publish_deadline`), so a live claim is never taken over.

A threshold write is checked against the device class's register map (name, range) before
anything leaves the fleet, so an operator hears "out of range" at once rather than from the
gateway later; an ack counts only from the gateway the command went to."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import or_, select, update
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

__all__ = ["CLAIM_LEASE", "Outgoing", "apply_ack", "claim", "list_commands", "mark_sent",
           "new_claimer", "publish_deadline", "release", "request_command"]

log = logging.getLogger(__name__)

#: How long a replica holds the pending commands it claimed before another may take them over.
CLAIM_LEASE = timedelta(seconds=60)


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
                        body=clean, state="pending", requested_by=user.user_id, error="",
                        claimed_by="")
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


def new_claimer() -> str:
    """A publisher's name in claims: host and pid for the operator, a nonce so two publishers
    in one process (tests, threads) are still told apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _claim_free(now: datetime):  # type: ignore[no-untyped-def]
    return or_(DeviceCommand.claimed_until.is_(None), DeviceCommand.claimed_until < now)


#: Per action: what a command carries on the wire but never in the database (an OTA start's
#: download token), computed when it is published.
WireFields = Callable[[Session, DeviceCommand], dict[str, Any]]


def claim(session: Session, claimer: str, now: datetime | None = None,
          limit: int = 50, wire: Mapping[str, WireFields] | None = None) -> list[Outgoing]:
    """Claim up to ``limit`` pending commands for ``claimer`` (a lease of :data:`CLAIM_LEASE`)
    and return them as messages for their gateway's ``cmd/`` topic (QoS 1), oldest first.

    Commit the session before publishing: the claim must be visible to other replicas."""
    now = now or utcnow()
    candidates = list(session.scalars(
        select(DeviceCommand.id).where(DeviceCommand.state == "pending", _claim_free(now))
        .order_by(DeviceCommand.id).limit(limit)
        .with_for_update(skip_locked=True)))  # PostgreSQL; SQLite's writer lock instead
    if not candidates:
        return []
    claimed = session.execute(
        update(DeviceCommand).where(DeviceCommand.id.in_(candidates),
                                    DeviceCommand.state == "pending", _claim_free(now))
        .values(claimed_by=claimer, claimed_until=now + CLAIM_LEASE)
        .returning(DeviceCommand.id)
        .execution_options(synchronize_session=False)).scalars().all()
    if not claimed:
        return []
    rows = session.execute(
        select(DeviceCommand, Device).join(Device, Device.id == DeviceCommand.device_id)
        .where(DeviceCommand.id.in_(claimed)).order_by(DeviceCommand.id)).all()
    wire = wire or {}

    def extra(cmd: DeviceCommand) -> dict[str, Any]:
        fill = wire.get(cmd.action)
        return fill(session, cmd) if fill is not None else {}

    return [Outgoing(cmd.id, command_topic(dev.gateway.key, dev.key, cmd.action),
                     dumps({"id": cmd.command_id, **cmd.body, **extra(cmd)}))
            for cmd, dev in rows]


def publish_deadline(claimed_at: float, publish_timeout_s: float) -> float:
    """The monotonic time after which a publisher must not start publishing another command
    of a batch it claimed at ``claimed_at``: one more publish could outlast the lease, and a
    command whose lease ran out may be claimed (and published) by another replica."""
    return claimed_at + CLAIM_LEASE.total_seconds() - 2 * publish_timeout_s


def mark_sent(session: Session, claimer: str, ids: list[int], at: datetime | None = None) -> int:
    """After the broker's PUBACK: the commands are on their way. Only rows this claimer still
    holds change; returns how many did."""
    if not ids:
        return 0
    sent = session.execute(
        update(DeviceCommand).where(DeviceCommand.id.in_(ids), DeviceCommand.state == "pending",
                                    DeviceCommand.claimed_by == claimer)
        .values(state="sent", sent_at=at or utcnow(), claimed_until=None)
        .returning(DeviceCommand.command_id, DeviceCommand.device_id, DeviceCommand.action)
        .execution_options(synchronize_session=False)).all()
    for command_id, device_id, action in sent:
        record(session, f"replica:{claimer}", "command.sent", "device", device_id,
               {"command_id": command_id, "action": action})
    return len(sent)


def release(session: Session, claimer: str, ids: list[int]) -> None:
    """Give back claimed commands that were not published (no PUBACK, or the batch ran out of
    lease), so the next pass of any replica takes them at once."""
    if ids:
        session.execute(
            update(DeviceCommand).where(DeviceCommand.id.in_(ids),
                                        DeviceCommand.state == "pending",
                                        DeviceCommand.claimed_by == claimer)
            .values(claimed_by="", claimed_until=None)
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
