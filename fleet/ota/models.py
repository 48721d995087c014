"""OTA tables: releases (metadata; the bundle's bytes in a table of their own so a listing
never loads them), campaigns, and one row per device in a campaign.

Why the bundle is a database blob, not a file under the data directory: fleet replicas share
nothing but the database (ARCHITECTURE.md), so a file written by the replica that took the
upload would be missing on the replica a gateway downloads from; the bytes also commit (or roll
back) with their release row, so there is never a release without its bundle or an orphan file.
Bundles are small (a MicroPython app is a few hundred KB; ``ota.release_max_bytes`` bounds it)
and each gateway fetches a release once and caches it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet.core.db import Base, UTCDateTime, utcnow

__all__ = ["Campaign", "CampaignDevice", "Release", "ReleaseBundle"]


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("device_class", "board", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(20))
    min_version: Mapped[str] = mapped_column(String(20))
    device_class: Mapped[str] = mapped_column(String(20), index=True)
    board: Mapped[str] = mapped_column(String(50))
    keyid: Mapped[str] = mapped_column(String(16))
    #: SHA-256 and size of the bundle (the tar) as gateways download it.
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    #: The verified manifest's file list ({path: {size, sha256}}).
    files: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReleaseBundle(Base):
    __tablename__ = "release_bundles"

    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="CASCADE"),
                                            primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"),
                                            index=True)
    #: running -> paused <-> running; running -> halted (on its own); -> completed; -> cancelled
    state: Mapped[str] = mapped_column(String(10), index=True)
    #: Cumulative percentages, and the 0-based wave now running.
    waves: Mapped[list[float]] = mapped_column(JSON)
    wave_count: Mapped[int] = mapped_column(Integer)
    current_wave: Mapped[int] = mapped_column(Integer, default=0)
    failure_threshold: Mapped[float] = mapped_column(Float)
    #: The targeting as asked ({area_id, tags, from_versions}); the devices are fixed at creation.
    target: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: The targeted area's path (visibility and who may control it); None: the whole tree.
    area_path: Mapped[str | None] = mapped_column(String(1000))
    device_class: Mapped[str] = mapped_column(String(20))
    halt_reason: Mapped[str] = mapped_column(Text, default="")
    #: The download token: only its keyed hash is stored (see fleet.ota.service.download_token).
    token_nonce: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    release: Mapped[Release] = relationship(lazy="joined")


class CampaignDevice(Base):
    __tablename__ = "campaign_devices"
    __table_args__ = (UniqueConstraint("campaign_id", "device_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"),
                                             index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"),
                                           index=True)
    wave: Mapped[int] = mapped_column(Integer)
    #: pending, sent, an OtaEvent phase (accepted ... confirmed, failed, cancelled)
    state: Mapped[str] = mapped_column(String(15), index=True)
    offset: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(200), default="")
    #: The device's firmware when it was targeted.
    from_version: Mapped[str | None] = mapped_column(String(50))
    #: The last OTA command queued for it (its gateway's ack is on the command).
    command_id: Mapped[str | None] = mapped_column(String(64))
    #: Ordering of its OtaEvents: (epoch, seq) of the last one applied, and its timestamp
    #: (which orders events of different gateway epochs: waves.newer_event).
    event_epoch: Mapped[str | None] = mapped_column(String(64))
    event_seq: Mapped[int | None] = mapped_column(Integer)
    event_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
