"""Request and response bodies of the registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.core.types import NO_NUL, Id, Tag

__all__ = ["AreaCreate", "AreaMove", "AreaOut", "DeviceCreate", "DeviceOut", "DevicePage",
           "DeviceUpdate", "GatewayCreate", "GatewayOut", "ImportResult", "SiteCreate",
           "SiteOut"]

_ID = r"^[^/+#\x00]+$"


class AreaCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: str = Field(default="", max_length=50, description="free text: city, ward, commune...",
                      pattern=NO_NUL)
    parent_id: Id | None = None
    code: str | None = Field(default=None, max_length=50, pattern=NO_NUL)


class AreaMove(BaseModel):
    parent_id: Id | None


class AreaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    kind: str
    code: str | None
    parent_id: int | None
    path: str


class SiteCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    area_id: Id
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    address: str = Field(default="", max_length=500, pattern=NO_NUL)


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    area_id: Id
    latitude: float | None
    longitude: float | None
    address: str


class GatewayCreate(BaseModel):
    key: str = Field(min_length=1, max_length=100, pattern=_ID)
    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    site_id: Id | None = None


class GatewayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    key: str
    name: str
    site_id: int | None
    connectivity: str
    last_seen: datetime | None
    auto_created: bool


class DeviceCreate(BaseModel):
    gateway_id: Id
    key: str = Field(min_length=1, max_length=100, pattern=_ID)
    device_class: Literal["fire", "flood", "water", "air"]
    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    address: int | None = Field(default=None, ge=1, le=247)
    site_id: Id | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class DeviceUpdate(BaseModel):
    """Only the fields present are changed (``site_id: null`` unassigns, admins only)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200, pattern=NO_NUL)
    address: int | None = Field(default=None, ge=1, le=247)
    site_id: Id | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    gateway_id: Id
    key: str
    name: str
    device_class: str
    address: int | None
    site_id: int | None
    firmware: str | None
    connectivity: str
    last_seen: datetime | None
    faults: list[str]
    tags: list[str]
    auto_created: bool


class DevicePage(BaseModel):
    total: int
    items: list[DeviceOut]


class ImportResult(BaseModel):
    created: int
    updated: int
