"""Telemetry settings: which sink ingest writes to. A section (``[telemetry]``) of the fleet's
one Settings object. The embedded store is the default (demo, small sites); InfluxDB needs a
url, an org, a bucket and a token."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = ["TelemetrySettings"]


class TelemetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: Literal["embedded", "influx"] = "embedded"
    #: The embedded store's file; empty: ``<data_dir>/telemetry.db``.
    embedded_path: Path | None = None
    raw_retention_h: float = Field(default=48, gt=0)
    minute_retention_d: float = Field(default=30, gt=0)
    influx_url: str = ""
    influx_org: str = ""
    influx_bucket: str = ""
    influx_token: SecretStr = SecretStr("")
    #: Longest series a chart may ask for in one request (points), so one request cannot make
    #: the store scan months at one-second steps.
    max_points: int = Field(default=5000, ge=10)

    @model_validator(mode="after")
    def _influx_complete(self) -> TelemetrySettings:
        if self.sink == "influx":
            missing = [n for n in ("influx_url", "influx_org", "influx_bucket")
                       if not getattr(self, n)]
            if not self.influx_token.get_secret_value():
                missing.append("influx_token")
            if missing:
                raise ValueError(f"sink 'influx' needs {', '.join(missing)}")
        return self
