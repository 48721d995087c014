"""Request and response bodies of the webhook and inbox APIs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.core.types import NO_NUL

__all__ = ["DeliveryOut", "NotificationOut", "WebhookCreate", "WebhookCreated", "WebhookOut"]


class WebhookCreate(BaseModel):
    # The same regex semantics as JSON Schema clients (Python's `$` also matches before a final
    # newline, which the Rust engine does not): the schema and the server must agree.
    model_config = ConfigDict(regex_engine="python-re")

    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    url: str = Field(max_length=1000, pattern=r"^https?://[^\x00-\x20\x7f]+$")
    #: Device classes to send (empty: every class).
    classes: list[Literal["fire", "flood", "water", "air"]] = Field(default_factory=list)
    #: The HMAC key; generated (and shown once) when omitted.
    secret: str | None = Field(default=None, min_length=16, max_length=200, pattern=NO_NUL)

    @field_validator("url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    url: str
    classes: list[str]
    active: bool


class WebhookCreated(WebhookOut):
    secret: str


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    event_id: int
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str


class NotificationOut(BaseModel):
    """One notification addressed to the caller (``kind`` "escalation": ``alarm_id`` reached
    ``level`` and is now ``role``'s, the caller's)."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    event_id: int
    alarm_id: int
    kind: str
    role: str
    level: int
    created_at: datetime
    read_at: datetime | None
