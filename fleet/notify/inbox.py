"""Escalations delivered to people: when an alarm escalates to a role, every member of that
role whose area scope covers the alarm gets a notification of their own.

Why per user and not only the broadcast feed: the feed already shows every alarm change to
everyone who may see it, which is not the same as telling the fire-safety officer of *that*
ward that the alarm is now theirs. A fire-safety office expects a personal, durable item (an
inbox that waits for whoever is off-shift, read or not) and a loud live event on the sessions
they have open. :func:`notify_role` writes the inbox rows in the escalation's own transaction
(so an escalation fired once notifies each member once, whichever replica fired it); the live
push (:mod:`fleet.notify.feed`) reads them and sends an ``escalation`` event to those users.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet.alarms.models import Alarm
from fleet.audit.models import AuditEntry
from fleet.audit.service import record
from fleet.auth.models import User
from fleet.auth.rbac import Principal, can_see
from fleet.core.db import utcnow
from fleet.core.errors import NotFound
from fleet.notify.models import UserNotification
from fleet.registry.models import Area

__all__ = ["list_inbox", "mark_read", "notify_role", "role_members_for"]


def role_members_for(session: Session, role: str, area_path: str | None,
                     device_class: str) -> list[int]:
    """Ids of the active users holding ``role`` who may see an alarm at ``area_path`` of
    ``device_class`` (the same rule as every other view: area subtree, the fire grant)."""
    members = []
    rows = session.execute(select(User, Area.path).outerjoin(Area, User.area_id == Area.id)
                           .where(User.role == role, User.disabled.is_(False))
                           .order_by(User.id)).all()
    for user, path in rows:
        if user.area_id is not None and path is None:
            continue  # the user's area is gone: they see nothing
        who = Principal(user_id=user.id, username=user.username, role=user.role,
                        area_path=path if user.area_id is not None else None,
                        fire_granted=user.fire_granted)
        if can_see(who, area_path, device_class):
            members.append(user.id)
    return members


def notify_role(session: Session, entry: AuditEntry, alarm: Alarm, role: str,
                level: int) -> list[int]:
    """Address the escalation ``entry`` (level ``level`` to ``role``) to the role's members
    in scope; returns their user ids (empty: nobody holds the role there, which the caller
    logs, because an escalation that reaches nobody must not pass unnoticed)."""
    dev = alarm.device
    area_path = dev.site.area.path if dev.site is not None else None
    members = role_members_for(session, role, area_path, alarm.device_class)
    for user_id in members:
        session.add(UserNotification(user_id=user_id, event_id=entry.id, alarm_id=alarm.id,
                                     kind="escalation", role=role, level=level))
    session.flush()
    return members


def list_inbox(session: Session, user: Principal, unread_only: bool = False,
               limit: int = 100) -> list[UserNotification]:
    query = select(UserNotification).where(UserNotification.user_id == user.user_id)
    if unread_only:
        query = query.where(UserNotification.read_at.is_(None))
    return list(session.scalars(query.order_by(UserNotification.id.desc()).limit(limit)))


def mark_read(session: Session, user: Principal, notification_id: int,
              at: datetime | None = None) -> None:
    """Mark one of the user's own notifications read (another user's is not found). The first
    read is audited: who saw the escalation, and when, is part of the alarm's record."""
    note = session.get(UserNotification, notification_id)
    if note is None or note.user_id != user.user_id:
        raise NotFound(f"notification {notification_id} not found")
    if note.read_at is None:
        note.read_at = at or utcnow()
        record(session, f"user:{user.username}", "notification.read", "notification", note.id,
               {"alarm_id": note.alarm_id, "event_id": note.event_id, "level": note.level})
