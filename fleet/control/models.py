"""Device commands: one row per request, from pending to sent to acknowledged by the gateway.
The row is the outbox the MQTT publisher reads, and the record the API shows.

A pending row is claimed by one replica's publisher at a time (``claimed_by`` until
``claimed_until``, a lease): two replicas on one database never publish one command twice, and
a claim left by a replica that died is taken over once its lease has run out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.core.db import Base, UTCDateTime, utcnow

__all__ = ["DeviceCommand"]


class DeviceCommand(Base):
    __tablename__ = "device_commands"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The id the gateway echoes in its ack (random, unique).
    command_id: Mapped[str] = mapped_column(String(64), unique=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"),
                                           index=True)
    action: Mapped[str] = mapped_column(String(20))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: pending -> sent -> ok | failed
    state: Mapped[str] = mapped_column(String(10), index=True)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(Text, default="")
    #: The publisher (host:pid:nonce) holding the pending row, and until when.
    claimed_by: Mapped[str] = mapped_column(String(100), default="")
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
