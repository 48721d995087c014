"""Ingest tables: delivery accounting per (gateway, device, epoch) and reject counters.

``ingest_streams`` is the persisted :class:`fleet.ingest.accounting.StreamState`: the seen seqs
and the declared drops as JSON range lists (one ``[[1, n]]`` for an in-order stream), with the
totals kept beside them so the API and the metrics sum them in SQL. A row is written in the same
transaction as the messages it accounts for.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet.core.db import Base, UTCDateTime, utcnow

__all__ = ["IngestReject", "IngestStream"]

_Count = BigInteger().with_variant(Integer(), "sqlite")


class IngestStream(Base):
    __tablename__ = "ingest_streams"

    gateway: Mapped[str] = mapped_column(String(100), primary_key=True)
    device: Mapped[str] = mapped_column(String(100), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64), primary_key=True)
    produced: Mapped[int] = mapped_column(_Count, default=0)
    received: Mapped[int] = mapped_column(_Count, default=0)
    duplicates: Mapped[int] = mapped_column(_Count, default=0)
    declared_drops: Mapped[int] = mapped_column(_Count, default=0)
    gaps: Mapped[int] = mapped_column(_Count, default=0)
    #: Seen seqs and declared drop ranges, as JSON ``[[first, last], ...]``.
    seen: Mapped[str] = mapped_column(Text, default="[]")
    dropped: Mapped[str] = mapped_column(Text, default="[]")
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IngestReject(Base):
    """Messages refused by ingest, counted per gateway and reason (``?`` when the topic did not
    even name a gateway)."""

    __tablename__ = "ingest_rejects"

    gateway: Mapped[str] = mapped_column(String(100), primary_key=True)
    reason: Mapped[str] = mapped_column(String(100), primary_key=True)
    count: Mapped[int] = mapped_column(_Count, default=0)
    last_detail: Mapped[str] = mapped_column(String(500), default="")
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
