"""Request and response bodies of the registry API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from fleet.core.types import NO_NUL, Id, Tag
from fleet.registry.outline import MAX_POSITIONS, OutlineError, check_outline

__all__ = ["AreaCreate", "AreaMove", "AreaOut", "AreaOutlineSet", "DeviceCreate", "DeviceOut",
           "DevicePage", "DeviceUpdate", "GatewayCreate", "GatewayOut", "ImportResult", "Outline",
           "SiteCreate", "SiteOut"]

_ID = r"^[^/+#\x00]+$"


def _outline(value: Any) -> dict[str, Any]:
    try:
        return check_outline(value)
    except OutlineError as exc:  # pydantic reports a ValueError as a 422 naming the field
        raise ValueError(str(exc)) from None


_POSITION = {"type": "array", "minItems": 2, "maxItems": 3, "prefixItems": [
    {"type": "number", "minimum": -180, "maximum": 180, "title": "longitude"},
    {"type": "number", "minimum": -90, "maximum": 90, "title": "latitude"},
    {"type": "number", "title": "altitude (dropped)"}]}
_BBOX = {"type": "array", "items": {"type": "number"}, "description": "ignored"}
_POLYGON = {"type": "array", "minItems": 1,
            "items": {"type": "array", "minItems": 4, "items": _POSITION}}

#: A GeoJSON Polygon or MultiPolygon, checked by :func:`fleet.registry.outline.check_outline`
#: (the schema says the shape; that every ring is closed, and the size bound, only the check
#: can say).
Outline = Annotated[dict[str, Any], BeforeValidator(_outline), WithJsonSchema({
    "title": "Outline",
    "description": "GeoJSON (RFC 7946) Polygon or MultiPolygon: positions [longitude, "
                   "latitude], every ring closed (its last position repeats its first), at "
                   f"most {MAX_POSITIONS} positions in all",
    "oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["type", "coordinates"],
         "properties": {"type": {"const": "Polygon"}, "coordinates": _POLYGON, "bbox": _BBOX}},
        {"type": "object", "additionalProperties": False, "required": ["type", "coordinates"],
         "properties": {"type": {"const": "MultiPolygon"},
                        "coordinates": {"type": "array", "minItems": 1, "items": _POLYGON},
                        "bbox": _BBOX}},
    ]})]


class AreaCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: str = Field(default="", max_length=50, description="free text: city, ward, commune...",
                      pattern=NO_NUL)
    parent_id: Id | None = None
    code: str | None = Field(default=None, max_length=50, pattern=NO_NUL)
    outline: Outline | None = None


class AreaOutlineSet(BaseModel):
    """The area's boundary; ``null`` removes it (the map goes back to the hull of its sites)."""

    model_config = ConfigDict(extra="forbid")
    outline: Outline | None


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
    outline: dict[str, Any] | None


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
