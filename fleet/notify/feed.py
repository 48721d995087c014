"""The alarm feed: one poller per fleet process turns new alarm audit rows (and device command
rows: requested, ok, failed) into events and hands each subscriber the ones its user may see.

Why the database and not an in-process bus: alarms are written by ingest, which may run in
another process or on another replica; every change to an alarm already writes an audit row in
the same transaction, so those rows are the one ordered record of alarm changes that every
replica can read. Ids are allocated before commit, so a row can appear with an id lower than one
already seen; the poller re-reads a window below its cursor and skips ids it has delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from fleet.alarms.models import Alarm
from fleet.audit.models import AuditEntry
from fleet.auth.rbac import Principal, can_see
from fleet.core.db import Database
from fleet.notify.models import UserNotification
from fleet.registry.models import Device

__all__ = ["AlarmEvent", "AlarmFeed", "Subscription", "alarm_event_data", "alarm_events_after",
           "command_event_data"]

log = logging.getLogger(__name__)

#: How far below the cursor the poller looks for late-committed rows (ids).
LOOKBACK = 500
#: Events a slow subscriber may have queued before it is dropped (it can reconnect with
#: Last-Event-ID and replay from the database).
QUEUE_BOUND = 1000


@dataclass(frozen=True)
class AlarmEvent:
    id: int  # the audit row id: the SSE event id a client resumes from
    action: str
    area_path: str | None
    device_class: str
    data: dict[str, Any]
    #: Users this change is addressed to (an escalation's role members, fleet.notify.inbox):
    #: their sessions also get an ``escalation`` event.
    recipients: frozenset[int] = frozenset()
    #: The escalation's level and role, when the change is one.
    escalation: dict[str, Any] | None = None
    #: The SSE event type: "alarm", or "command" for a device command's state change
    #: (requested, then the gateway's ok or failed), so a device page shows the ack at once.
    kind: str = "alarm"

    def addressed_to(self, user: Principal) -> bool:
        return user.user_id in self.recipients


#: The audit rows the feed turns into events: every alarm change, and device commands.
FEED_ROWS = or_(AuditEntry.entity_type == "alarm",
                and_(AuditEntry.entity_type == "device", AuditEntry.action.like("command.%")))


def alarm_event_data(entry: AuditEntry, alarm: Alarm) -> dict[str, Any]:
    """The JSON body of an alarm event, the same for SSE and webhooks."""
    dev = alarm.device
    return {
        "event_id": entry.id, "action": entry.action, "at": entry.at.isoformat(),
        "actor": entry.actor, "alarm": {
            "id": alarm.id, "alarm_key": alarm.alarm_key, "type": alarm.type,
            "severity": alarm.severity, "device_class": alarm.device_class,
            "device_id": alarm.device_id, "device": dev.key, "site_id": dev.site_id,
            "state": alarm.state, "active": alarm.active,
            "escalation_level": alarm.escalation_level, "group_id": alarm.group_id,
            "flapping": alarm.flapping, "raised_at": alarm.raised_at.isoformat(),
            "location": alarm.location,
        }}


def command_event_data(entry: AuditEntry, device: Device) -> dict[str, Any]:
    """The JSON body of a command event: which command of which device, and its new state."""
    return {"event_id": entry.id, "action": entry.action, "at": entry.at.isoformat(),
            "command": {"device_id": device.id, "device": device.key,
                        "command_id": entry.detail.get("command_id"),
                        "state": entry.action.removeprefix("command.")}}


def _ids(rows: list[AuditEntry], entity_type: str) -> set[int]:
    return {int(r.entity_id) for r in rows if r.entity_type == entity_type
            and r.entity_id.isdigit()}


def _events(session: Session, rows: list[AuditEntry]) -> list[AlarmEvent]:
    alarms = {a.id: a for a in session.scalars(
        select(Alarm).where(Alarm.id.in_(_ids(rows, "alarm"))))}
    devices = {d.id: d for d in session.scalars(
        select(Device).where(Device.id.in_(_ids(rows, "device"))))}
    escalations = [r.id for r in rows if r.action == "alarm.escalated"]
    recipients: dict[int, set[int]] = {}
    if escalations:
        for event_id, user_id in session.execute(
                select(UserNotification.event_id, UserNotification.user_id)
                .where(UserNotification.event_id.in_(escalations))):
            recipients.setdefault(int(event_id), set()).add(int(user_id))
    out = []
    for row in rows:
        key = int(row.entity_id) if row.entity_id.isdigit() else None
        if row.entity_type == "device":
            device = devices.get(key) if key is not None else None
            if device is None:
                continue
            area_path = device.site.area.path if device.site is not None else None
            out.append(AlarmEvent(row.id, row.action, area_path, device.device_class,
                                  command_event_data(row, device), kind="command"))
            continue
        alarm = alarms.get(key) if key is not None else None
        if alarm is None:
            continue
        dev = alarm.device
        area_path = dev.site.area.path if dev.site is not None else None
        escalation = None
        if row.action == "alarm.escalated":
            escalation = {"level": row.detail.get("level"), "role": row.detail.get("role")}
        out.append(AlarmEvent(row.id, row.action, area_path, alarm.device_class,
                              alarm_event_data(row, alarm),
                              frozenset(recipients.get(row.id, ())), escalation))
    return out


def alarm_events_after(session: Session, after_id: int, limit: int = 500) -> list[AlarmEvent]:
    rows = list(session.scalars(select(AuditEntry).where(
        FEED_ROWS, AuditEntry.id > after_id).order_by(AuditEntry.id).limit(limit)))
    return _events(session, rows)


@dataclass(eq=False)
class Subscription:
    user: Principal
    queue: asyncio.Queue[AlarmEvent | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_BOUND))
    #: Set when the feed drops a subscriber that fell too far behind; its stream ends and the
    #: client reconnects with Last-Event-ID.
    closed: bool = False

    async def next(self) -> AlarmEvent | None:
        return await self.queue.get()

    def offer(self, event: AlarmEvent) -> bool:
        if not can_see(self.user, event.area_path, event.device_class):
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True


class AlarmFeed:
    def __init__(self, db: Database, poll_s: float) -> None:
        self._db = db
        self._poll_s = poll_s
        self._subs: set[Subscription] = set()
        self._cursor: int | None = None
        self._delivered: set[int] = set()
        self._wake = asyncio.Event()

    def subscribe(self, user: Principal) -> Subscription:
        sub = Subscription(user)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def poke(self) -> None:
        """Poll now (a change was just committed in this process)."""
        self._wake.set()

    def _poll(self) -> list[AlarmEvent]:
        with self._db.reading() as session:
            if self._cursor is None:
                # Start at the present: what is already in the window counts as delivered
                # (clients catch up on the past with Last-Event-ID, not from the feed).
                self._cursor = int(session.scalar(select(func.max(AuditEntry.id))) or 0)
                self._delivered = set(session.scalars(select(AuditEntry.id).where(
                    FEED_ROWS, AuditEntry.id > self._cursor - LOOKBACK)))
                return []
            low = max(0, self._cursor - LOOKBACK)
            rows = [r for r in session.scalars(select(AuditEntry).where(
                FEED_ROWS, AuditEntry.id > low)
                .order_by(AuditEntry.id).limit(2000)) if r.id not in self._delivered]
            events = _events(session, rows)
        for row in rows:
            self._delivered.add(row.id)
            self._cursor = max(self._cursor, row.id)
        self._delivered = {i for i in self._delivered if i > self._cursor - LOOKBACK}
        return events

    async def run(self, sleep: Callable[[float], Any] | None = None) -> None:
        log.info("alarm feed polling every %.2f s", self._poll_s)
        while True:
            try:
                events = await asyncio.to_thread(self._poll)
            except Exception:
                log.exception("alarm feed poll failed; retrying")
                events = []
            for event in events:
                for sub in list(self._subs):
                    if not sub.offer(event):
                        log.warning("SSE subscriber of %s is too slow; dropping it",
                                    sub.user.username)
                        self._subs.discard(sub)
                        sub.closed = True
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            except TimeoutError:
                pass
