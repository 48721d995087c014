"""API shapes for delivery accounting."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["DeliveryOut", "StreamOut"]


class StreamOut(BaseModel):
    """One (device, epoch): received + declared_drops + gaps = produced."""

    epoch: str
    produced: int
    received: int
    duplicates: int
    declared_drops: int
    gaps: int
    balanced: bool
    #: The first missing seq ranges (neither delivered nor declared dropped), at most 100.
    gap_ranges: list[tuple[int, int]]
    first_at: datetime
    updated_at: datetime


class DeliveryOut(BaseModel):
    device_id: int
    gateway: str
    device: str
    streams: list[StreamOut]
