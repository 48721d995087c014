"""Registry tables: areas (a tree of any depth), sites, gateways and devices.

Areas carry a materialised path ("/1/7/42/") so "everything under this ward" is one indexed
prefix match on both SQLite and PostgreSQL, whatever the depth (HCMC since 2025: city, then
wards and communes; other cities keep districts). A device with no site is "unassigned": it was
seen on MQTT before anyone registered it, and only admins see it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet.core.db import Base, UTCDateTime, utcnow

__all__ = ["CONNECTIVITY", "Area", "Device", "Gateway", "Site"]

#: A device's or gateway's connectivity as the fleet knows it. "unknown" when its gateway is
#: offline: the last word we have is not a promise that it is fine.
CONNECTIVITY = ("online", "offline", "unknown")


class Area(Base):
    __tablename__ = "areas"
    __table_args__ = (UniqueConstraint("parent_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Free text: "city", "ward", "commune", "district" ... never interpreted by code.
    kind: Mapped[str] = mapped_column(String(50), default="")
    code: Mapped[str | None] = mapped_column(String(50), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id", ondelete="RESTRICT"),
                                                  index=True)
    path: Mapped[str] = mapped_column(String(1000), index=True, default="")
    #: The area's boundary as a GeoJSON Polygon or MultiPolygon ([longitude, latitude]),
    #: checked by :mod:`fleet.registry.outline`; None when the registry has none (the map then
    #: outlines the area by the hull of its sites). SQL NULL, never a JSON null.
    outline: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id", ondelete="RESTRICT"), index=True)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(500), default="")

    area: Mapped[Area] = relationship(lazy="joined")


class Gateway(Base):
    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The gateway's id on MQTT (one topic level).
    key: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"),
                                                index=True)
    connectivity: Mapped[str] = mapped_column(String(10), default="unknown")
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    health: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    auto_created: Mapped[bool] = mapped_column(Boolean, default=False)

    site: Mapped[Site | None] = relationship(lazy="joined")


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("gateway_id", "key"),
        # A ward's list filtered by class or connectivity reaches its devices through its sites
        # (bench/bench_api.py: 4x faster than through the class or connectivity index alone).
        Index("ix_devices_site_class", "site_id", "device_class"),
        Index("ix_devices_site_connectivity", "site_id", "connectivity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="RESTRICT"),
                                            index=True)
    #: The device's id on MQTT (one topic level), unique under its gateway.
    key: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200), default="")
    device_class: Mapped[str] = mapped_column(String(20), index=True)
    #: Modbus address on the gateway's bus (1-247), None for non-Modbus devices.
    address: Mapped[int | None] = mapped_column(Integer)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id", ondelete="SET NULL"),
                                                index=True)
    firmware: Mapped[str | None] = mapped_column(String(50))
    connectivity: Mapped[str] = mapped_column(String(10), default="unknown", index=True)
    #: What the device's own last state said (online or not), kept so that a gateway coming
    #: back turns "unknown" into the last report, not into a guess.
    reported_online: Mapped[bool | None] = mapped_column(Boolean)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    faults: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Ordering of retained state messages: (epoch, seq) of the last one applied.
    state_epoch: Mapped[str | None] = mapped_column(String(64))
    state_seq: Mapped[int | None] = mapped_column(Integer)
    state_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auto_created: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    gateway: Mapped[Gateway] = relationship(lazy="joined")
    site: Mapped[Site | None] = relationship(lazy="joined")
