"""OTA settings: the release trust, where gateways download bundles, and campaign defaults.
A section (``[ota]``) of the fleet's one Settings object."""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["DEFAULT_WAVES", "OtaSettings"]

#: Cumulative share of the targeted devices after each wave, in percent.
DEFAULT_WAVES = (1.0, 10.0, 50.0, 100.0)


def check_waves(waves: tuple[float, ...]) -> tuple[float, ...]:
    """Strictly increasing cumulative percentages ending at 100 (ValueError otherwise)."""
    if not waves:
        raise ValueError("at least one wave")
    if any(not 0 < w <= 100 for w in waves):
        raise ValueError("each wave is a cumulative percentage in (0, 100]")
    if any(b <= a for a, b in itertools.pairwise(waves)):
        raise ValueError("waves must increase")
    if waves[-1] != 100:
        raise ValueError("the last wave must reach 100 %")
    return waves


class OtaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The release trust: a device trust file as ``edgefleet release trust`` writes it (key set
    #: and anti-rollback floor) or a key set file (``keyset.json``). Read again for every
    #: upload, so a rotated or revoked key takes effect without a restart. None: uploads are
    #: refused (the fleet never stores what it cannot verify).
    release_trust: Path | None = None
    #: The fleet's address as gateways reach it; bundle URLs are
    #: ``<base>/api/v1/releases/<id>/bundle``. Empty: campaigns cannot be created.
    bundle_base_url: str = Field(default="", max_length=500)
    #: The largest bundle accepted (bytes).
    release_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Default staged waves (cumulative percent) and failure threshold of a new campaign.
    waves: tuple[float, ...] = DEFAULT_WAVES
    failure_threshold: float = Field(default=0.2, ge=0, lt=1)
    #: A device that reports nothing for this long while its update runs has failed (timeout).
    device_timeout_s: float = Field(default=6 * 3600, gt=0)
    #: How long a campaign's download token lives at most (it also ends with the campaign).
    token_ttl_s: float = Field(default=30 * 86400, gt=0)
    #: How often the campaign timer runs (wave advance, halt checks, timeouts, hazard holds).
    poll_s: float = Field(default=5.0, gt=0)

    @field_validator("waves")
    @classmethod
    def _waves(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        return check_waves(value)

    @field_validator("bundle_base_url")
    @classmethod
    def _base(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("bundle_base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _trust_readable(self) -> OtaSettings:
        if self.release_trust is not None:
            from fleet.ota.bundle import load_trust

            load_trust(self.release_trust)  # ValueError naming the problem, at start-up
        return self
