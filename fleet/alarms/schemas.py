"""Request and response bodies of the alarm API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet.core.types import NO_NUL

__all__ = ["AlarmAction", "AlarmOut", "HistoryEntry"]


class AlarmAction(BaseModel):
    comment: str = Field(default="", max_length=2000, pattern=NO_NUL)


class AlarmOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    alarm_key: str
    device_id: int
    device_class: str
    type: str
    severity: str | None
    state: str
    active: bool
    location: str
    description: str
    raised_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: int | None
    ack_comment: str
    resolved_at: datetime | None
    group_id: int | None
    flapping: bool
    escalation_level: int
    #: When the next escalation falls due if nobody acknowledges (None: no further step).
    next_escalation_at: datetime | None = None


class HistoryEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
