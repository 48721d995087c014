"""API shapes for telemetry history."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["SeriesOut", "SeriesPoint"]


class SeriesPoint(BaseModel):
    t: datetime
    mean: float
    min: float
    max: float
    n: int


class SeriesOut(BaseModel):
    device_id: int
    field: str
    step_s: float
    since: datetime
    until: datetime
    points: list[SeriesPoint]
