"""Alarm tables. One row per gateway alarm id (unique), so a replayed message finds its alarm
instead of making a second one; one row per escalation level fired (unique), so two replicas
racing for the same escalation cannot both record it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet.core.db import Base, UTCDateTime, utcnow
from fleet.registry.models import Device

__all__ = ["Alarm", "Escalation"]


class Alarm(Base):
    __tablename__ = "alarms"
    __table_args__ = (UniqueConstraint("gateway_id", "alarm_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="RESTRICT"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="RESTRICT"),
                                           index=True)
    #: The gateway's stable alarm id (``<device>:<type>:<boot>:<n>``).
    alarm_key: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(50))
    severity: Mapped[str | None] = mapped_column(String(20))
    device_class: Mapped[str] = mapped_column(String(20))
    #: raised -> acknowledged -> resolved (see fleet.alarms.lifecycle).
    state: Mapped[str] = mapped_column(String(15), index=True)
    #: True while the device still reports the condition.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    location: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ack_comment: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolve_comment: Mapped[str] = mapped_column(Text, default="")
    #: The storm group (the first alarm's id; its own id when alone), see alarms.grouping.
    group_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: Raised again and again within a short window: kept, shown, but not notified on its own.
    flapping: Mapped[bool] = mapped_column(Boolean, default=False)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    device: Mapped[Device] = relationship(lazy="joined")


class Escalation(Base):
    __tablename__ = "alarm_escalations"
    __table_args__ = (UniqueConstraint("alarm_id", "level"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"),
                                          index=True)
    level: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Which replica fired it (host:pid), for the operator reading the log.
    fired_by: Mapped[str] = mapped_column(String(100), default="")
