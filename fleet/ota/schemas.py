"""Request and response bodies of the release and campaign API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.core.types import NO_NUL, Id, Tag
from fleet.ota.settings import check_waves

__all__ = ["CampaignCreate", "CampaignDeviceOut", "CampaignOut", "HaltOut", "ReleaseOut",
           "WaveOut"]

Version = Annotated[str, Field(min_length=1, max_length=50, pattern=NO_NUL)]


class ReleaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    version: str
    min_version: str
    device_class: str
    board: str
    keyid: str
    sha256: str
    size: int
    files: dict[str, Any]
    uploaded_at: datetime


class CampaignCreate(BaseModel):
    """Target by area (its whole subtree; default: your own area), class (the release's),
    tags (a device must carry all of them) and current firmware versions (any of them)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    release_id: Id
    area_id: Id | None = None
    device_class: str | None = Field(default=None, max_length=20, pattern=NO_NUL)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    from_versions: list[Version] = Field(default_factory=list, max_length=50)
    #: Cumulative percent after each wave (default from the settings: 1, 10, 50, 100).
    waves: list[Annotated[float, Field(gt=0, le=100)]] | None = Field(default=None,
                                                                       max_length=20)
    #: Halt when more than this share of a wave's finished devices failed (default 0.2).
    failure_threshold: float | None = Field(default=None, ge=0, lt=1)

    @field_validator("waves")
    @classmethod
    def _waves(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else list(check_waves(tuple(value)))


class WaveOut(BaseModel):
    wave: int  # 1-based
    devices: int
    pending: int
    in_flight: int
    confirmed: int
    failed: int
    cancelled: int


class HaltOut(BaseModel):
    """Why a campaign halted, as data (``halt_reason`` says the same in English)."""

    code: str  # failure_rate
    wave: int  # 1-based
    failed: int
    finished: int  # confirmed + failed in that wave
    threshold: float


class CampaignOut(BaseModel):
    id: int
    name: str
    release_id: int
    version: str
    device_class: str
    state: str
    current_wave: int  # 1-based
    wave_count: int
    waves: list[float]
    failure_threshold: float
    target: dict[str, Any]
    halt_reason: str
    halt: HaltOut | None = None
    #: Over the devices the caller may see.
    devices: int
    by_state: dict[str, int]
    wave_progress: list[WaveOut]
    #: Pending devices of the current wave waiting for a fire or flood alarm at their site.
    held_by_hazard: int
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None


class CampaignDeviceOut(BaseModel):
    device_id: int
    device: str
    gateway: str
    site_id: int | None
    wave: int  # 1-based
    state: str
    offset: int
    size: int
    reason: str
    from_version: str | None
    #: What the device's own state reports now (reaches the release after ``confirmed``).
    firmware: str | None
    command_id: str | None
    #: The last command's outbox state: pending, sent, ok (the gateway took it), failed.
    command_state: str | None
    sent_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
