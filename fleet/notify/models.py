"""Webhook subscriptions and the durable delivery queue (one row per event per subscriber).

A delivery row is written in the same transaction as the alarm change it reports (an outbox):
if the change commits, its notification exists; unique (subscription, event) makes enqueueing
idempotent. Workers in any replica claim due rows with a lease (``claimed_until``), so a row is
sent by one worker at a time and retried with back-off until the receiver answers 2xx."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from fleet.core.db import Base, UTCDateTime, utcnow

__all__ = ["UserNotification", "WebhookDelivery", "WebhookSubscription"]


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(1000))
    #: The HMAC key shared with the receiver, sealed (notify.sealed): the fleet must read it
    #: back to sign, but a copy of the database must not give it away.
    secret_sealed: Mapped[str] = mapped_column(Text)
    #: Device classes to send (empty: all).
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("subscription_id", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"), index=True)
    #: The audit row the event reports: the receiver's idempotency key.
    event_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class UserNotification(Base):
    """A notification addressed to one user: an escalation reaches every member of the target
    role whose scope covers the alarm. The row is the user's durable inbox (a dispatcher who
    was not logged in finds it on return); the live push also sends it to their open sessions.
    Unique per (user, event), so an escalation recorded once notifies each member once."""

    __tablename__ = "user_notifications"
    __table_args__ = (UniqueConstraint("user_id", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The audit row of the event (``alarm.escalated``): the SSE id the push carries.
    event_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                          index=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    role: Mapped[str] = mapped_column(String(20))
    level: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
