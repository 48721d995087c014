"""Alarm logic over the database: applying the gateway's alarm messages, operator actions,
listing what a user may see, and firing escalations exactly once across replicas.

The decisions are :mod:`fleet.alarms.lifecycle`'s (pure); this module loads, applies and records
them. Functions take a Session and never commit (the caller owns the unit of work). Every change
writes an audit row in the same transaction; the live push (``fleet.notify``) follows those rows.

Replays: an alarm is keyed by (gateway, the gateway's alarm id), unique in the database, so a
replayed or redelivered message finds the alarm it already made, even when two ingest replicas
race on it (the loser's insert fails inside a savepoint and it re-reads the winner's row).

Escalation reaches people: each level is addressed to the members of its role whose area
scope covers the alarm (:mod:`fleet.notify.inbox`), in the same transaction as the claim.

Escalation across replicas: the claim is ``UPDATE alarms SET escalation_level = :new WHERE id =
:id AND escalation_level = :old AND state = 'raised'``. On PostgreSQL a second replica's UPDATE
waits for the first to commit, re-checks the WHERE and matches nothing; on SQLite writers are
serialised (BEGIN IMMEDIATE). Only the replica whose claim matched a row records the escalation,
and a unique (alarm, level) row is a second guard.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.mqtt import AlarmPayload
from fleet.alarms import grouping, lifecycle
from fleet.alarms.models import Alarm, Escalation
from fleet.audit.models import AuditEntry
from fleet.audit.service import actor_gateway, record
from fleet.auth.rbac import Principal
from fleet.core.db import utcnow
from fleet.core.errors import Conflict, NotFound
from fleet.core.settings import EscalationStep
from fleet.notify import inbox, webhooks
from fleet.notify.feed import alarm_event_data
from fleet.registry.models import Device, Gateway
from fleet.registry.service import device_visible, ensure_device, touch_device, visible_devices

__all__ = ["AlarmFilter", "AlarmPolicy", "EscalationFired", "acknowledge", "alarm_counts",
           "alarm_history", "apply_alarm", "escalate_due", "get_alarm", "list_alarms",
           "policy_for", "replica_name", "resolve"]

log = logging.getLogger(__name__)


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _view(alarm: Alarm) -> lifecycle.AlarmView:
    return lifecycle.AlarmView(alarm.state, alarm.active)  # type: ignore[arg-type]


def _apply(session: Session, alarm: Alarm, outcome: lifecycle.Outcome, actor: str,
           at: datetime, detail: dict[str, object] | None = None) -> None:
    alarm.state, alarm.active = outcome.state, outcome.active
    for action in outcome.actions:
        if action == "alarm.cleared":
            alarm.cleared_at = at
        elif action == "alarm.resolved" and alarm.resolved_at is None:
            alarm.resolved_at = at
        entry = record(session, actor, action, "alarm", alarm.id,
                       {"alarm_key": alarm.alarm_key, "type": alarm.type,
                        "state": alarm.state, **(detail or {})})
        _notify(session, entry, alarm)
    alarm.updated_at = utcnow()


def _notify(session: Session, entry: AuditEntry, alarm: Alarm) -> None:
    """Queue the webhooks for this change in the same transaction (the outbox pattern)."""
    session.flush()
    webhooks.enqueue(session, entry, alarm.device_class, alarm_event_data(entry, alarm))


@dataclass(frozen=True)
class AlarmPolicy:
    flapping: grouping.FlapPolicy = field(default_factory=grouping.FlapPolicy)
    storm: grouping.StormPolicy = field(default_factory=grouping.StormPolicy)


DEFAULT_POLICY = AlarmPolicy()


def apply_alarm(session: Session, gateway_id: str, payload: AlarmPayload,
                policy: AlarmPolicy = DEFAULT_POLICY) -> Alarm:
    """A gateway's ``alarm`` message (raised or cleared), idempotent per alarm id."""
    device = ensure_device(session, gateway_id, payload.device, payload.device_class)
    touch_device(session, gateway_id, payload.device, payload.ts)
    alarm = _find(session, device.gateway_id, payload.alarm_id)
    if alarm is None:
        alarm = _insert(session, device, payload)
        if alarm is None:  # another replica inserted it first: treat ours as a replay
            alarm = _find(session, device.gateway_id, payload.alarm_id)
            assert alarm is not None
        else:
            _classify(session, alarm, device, policy)
            outcome = lifecycle.on_device(None, payload.state)
            _apply(session, alarm, outcome, actor_gateway(gateway_id), payload.ts,
                   {"severity": payload.severity, "device": payload.device,
                    "class": payload.device_class, "group_id": alarm.group_id,
                    "flapping": alarm.flapping})
            log.warning("alarm %s %s on %s/%s (%s)", payload.alarm_id, payload.type,
                        gateway_id, payload.device, payload.severity)
            if alarm.active:
                _correlate(session, alarm, device, gateway_id)
            return alarm
    outcome = lifecycle.on_device(_view(alarm), payload.state)
    if outcome.changed:
        _apply(session, alarm, outcome, actor_gateway(gateway_id), payload.ts)
    return alarm


def _classify(session: Session, alarm: Alarm, device: Device, policy: AlarmPolicy) -> None:
    """Flapping and storm group of a new alarm (decided by alarms.grouping)."""
    since = alarm.raised_at - policy.flapping.window
    earlier = session.scalars(select(Alarm.raised_at).where(
        Alarm.device_id == device.id, Alarm.type == alarm.type, Alarm.id != alarm.id,
        Alarm.raised_at >= since, Alarm.raised_at <= alarm.raised_at)).all()
    alarm.flapping = grouping.is_flapping(earlier, alarm.raised_at, policy.flapping)
    group = None
    if device.site_id is not None:
        window = policy.storm.window
        site_alarms = session.execute(
            select(Alarm.id, Alarm.raised_at, Alarm.group_id)
            .join(Device, Alarm.device_id == Device.id)
            .where(Device.site_id == device.site_id, Alarm.id != alarm.id,
                   Alarm.state != "resolved",
                   Alarm.raised_at >= alarm.raised_at - window,
                   Alarm.raised_at <= alarm.raised_at + window)).all()
        group = grouping.storm_group(site_alarms, alarm.raised_at, policy.storm)
    alarm.group_id = group if group is not None else alarm.id


def _correlate(session: Session, alarm: Alarm, device: Device, gateway_id: str) -> None:
    """Raise a confirmed alarm when this one completes a correlation rule at its site. Keyed
    by site, rule and storm group, so one incident makes one confirmed alarm however many
    detectors (and gateways) report it."""
    if device.site_id is None:
        return
    active = session.execute(
        select(Alarm.type, Alarm.raised_at).join(Device, Alarm.device_id == Device.id)
        .where(Device.site_id == device.site_id, Alarm.active.is_(True),
               Alarm.state != "resolved")).all()
    for rule in grouping.correlate([(kind, at) for kind, at in active]):
        key = f"site:{device.site_id}:{rule.name}:{alarm.group_id}"
        if session.scalar(select(Alarm.id).where(Alarm.alarm_key == key)) is not None:
            continue
        confirmed = Alarm(gateway_id=alarm.gateway_id, device_id=device.id, alarm_key=key,
                          type=rule.name, severity=rule.severity,
                          device_class=alarm.device_class, state="raised", active=True,
                          location=alarm.location, raised_at=alarm.raised_at,
                          received_at=utcnow(), escalation_level=0, group_id=alarm.group_id,
                          flapping=False, ack_comment="", resolve_comment="",
                          description=f"{rule.name}: correlated at site {device.site_id}")
        session.add(confirmed)
        session.flush()
        _apply(session, confirmed, lifecycle.on_device(None, "raised"), "system",
               alarm.raised_at, {"rule": rule.name, "site_id": device.site_id,
                                 "trigger": alarm.id})
        log.warning("%s at site %d (triggered by %s via %s)", rule.name, device.site_id,
                    alarm.alarm_key, gateway_id)


def alarm_counts(session: Session) -> dict[tuple[str, str], int]:
    """Alarms by (state, device class), for the metrics endpoint."""
    rows = session.execute(select(Alarm.state, Alarm.device_class, func.count())
                           .group_by(Alarm.state, Alarm.device_class)).all()
    return {(state, cls): int(n) for state, cls, n in rows}


def _find(session: Session, gateway_pk: int, alarm_key: str) -> Alarm | None:
    return session.scalar(select(Alarm).where(Alarm.gateway_id == gateway_pk,
                                              Alarm.alarm_key == alarm_key))


def _insert(session: Session, device: Device, payload: AlarmPayload) -> Alarm | None:
    alarm = Alarm(gateway_id=device.gateway_id, device_id=device.id,
                  alarm_key=payload.alarm_id, type=payload.type, severity=payload.severity,
                  device_class=payload.device_class, state="raised",
                  active=payload.state == "raised", location=payload.location,
                  description=payload.description, raised_at=payload.ts,
                  received_at=utcnow(), escalation_level=0, ack_comment="", resolve_comment="")
    try:
        with session.begin_nested():
            session.add(alarm)
            session.flush()
    except IntegrityError:
        return None
    return alarm


# -- operator actions --------------------------------------------------------------------------
def _visible_alarms(query: Select[tuple[Alarm]], user: Principal) -> Select[tuple[Alarm]]:
    return visible_devices(query.join(Device, Alarm.device_id == Device.id), user)


def get_alarm(session: Session, user: Principal, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None or not device_visible(user, alarm.device):
        raise NotFound(f"alarm {alarm_id} not found")
    return alarm


def acknowledge(session: Session, user: Principal, alarm_id: int, comment: str) -> Alarm:
    alarm = get_alarm(session, user, alarm_id)
    try:
        outcome = lifecycle.on_acknowledge(_view(alarm))
    except lifecycle.LifecycleError as exc:
        raise Conflict(str(exc), code="alarm-state") from None
    now = utcnow()
    alarm.acknowledged_at, alarm.acknowledged_by, alarm.ack_comment = now, user.user_id, comment
    _apply(session, alarm, outcome, f"user:{user.username}", now, {"comment": comment})
    if alarm.state == "resolved":
        alarm.resolved_by = user.user_id
    return alarm


def resolve(session: Session, user: Principal, alarm_id: int, comment: str) -> Alarm:
    alarm = get_alarm(session, user, alarm_id)
    try:
        outcome = lifecycle.on_resolve(_view(alarm))
    except lifecycle.LifecycleError as exc:
        raise Conflict(str(exc), code="alarm-state") from None
    now = utcnow()
    alarm.resolved_by, alarm.resolve_comment = user.user_id, comment
    _apply(session, alarm, outcome, f"user:{user.username}", now, {"comment": comment})
    return alarm


@dataclass(frozen=True)
class AlarmFilter:
    state: str | None = None
    active: bool | None = None
    device_class: str | None = None
    device_id: int | None = None
    open_only: bool = False


def list_alarms(session: Session, user: Principal, flt: AlarmFilter, *, limit: int = 100,
                offset: int = 0) -> list[Alarm]:
    query = _visible_alarms(select(Alarm), user)
    if flt.state is not None:
        query = query.where(Alarm.state == flt.state)
    if flt.open_only:
        query = query.where(Alarm.state != "resolved")
    if flt.active is not None:
        query = query.where(Alarm.active.is_(flt.active))
    if flt.device_class is not None:
        query = query.where(Alarm.device_class == flt.device_class)
    if flt.device_id is not None:
        query = query.where(Alarm.device_id == flt.device_id)
    query = query.order_by(Alarm.raised_at.desc(), Alarm.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))


def alarm_history(session: Session, user: Principal, alarm_id: int) -> list[AuditEntry]:
    get_alarm(session, user, alarm_id)
    return list(session.scalars(select(AuditEntry).where(
        AuditEntry.entity_type == "alarm", AuditEntry.entity_id == str(alarm_id))
        .order_by(AuditEntry.id)))


# -- escalation --------------------------------------------------------------------------------
def policy_for(policy: Mapping[str, Sequence[EscalationStep]],
               device_class: str) -> Sequence[EscalationStep]:
    return policy.get(device_class) or policy.get("default") or ()


@dataclass(frozen=True)
class EscalationFired:
    alarm_id: int
    level: int
    role: str
    #: The users notified (members of ``role`` whose scope covers the alarm).
    notified: tuple[int, ...] = ()


def escalate_due(session: Session, policy: Mapping[str, Sequence[EscalationStep]],
                 now: datetime, fired_by: str | None = None) -> list[EscalationFired]:
    """Escalate every unacknowledged alarm that is overdue at ``now``; return what *this*
    caller fired (a level another replica claimed first is not in the list)."""
    fired_by = fired_by or replica_name()
    fired: list[EscalationFired] = []
    candidates = session.execute(select(Alarm.id, Alarm.device_class, Alarm.escalation_level,
                                        Alarm.raised_at, Alarm.state)
                                 .where(Alarm.state == "raised")).all()
    for alarm_id, device_class, level, raised_at, state in candidates:
        steps = policy_for(policy, device_class)
        due = lifecycle.escalation_due(state, level, raised_at, now, steps)
        if due is None:
            continue
        claimed = session.execute(
            update(Alarm).where(Alarm.id == alarm_id, Alarm.escalation_level == level,
                                Alarm.state == "raised")
            .values(escalation_level=due, escalated_at=now, updated_at=now)
            .execution_options(synchronize_session=False))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another replica got there first, or it was acknowledged meanwhile
        for n in range(level + 1, due + 1):
            role = steps[n - 1].role
            session.add(Escalation(alarm_id=alarm_id, level=n, role=role, at=now,
                                   fired_by=fired_by))
            entry = record(session, "system", "alarm.escalated", "alarm", alarm_id,
                           {"level": n, "role": role, "replica": fired_by}, at=now)
            alarm = session.get(Alarm, alarm_id)
            assert alarm is not None
            session.refresh(alarm)
            _notify(session, entry, alarm)
            members = inbox.notify_role(session, entry, alarm, role, n)
            fired.append(EscalationFired(alarm_id, n, role, tuple(members)))
            if members:
                log.warning("alarm %d unacknowledged: escalated to level %d (%s: %d user(s))",
                            alarm_id, n, role, len(members))
            else:
                log.error("alarm %d unacknowledged: escalated to level %d, but no %s user's "
                          "scope covers it: nobody was notified", alarm_id, n, role)
    session.flush()
    return fired


def gateway_key(session: Session, gateway_pk: int) -> str:
    return session.scalar(select(Gateway.key).where(Gateway.id == gateway_pk)) or ""
