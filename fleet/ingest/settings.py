"""Ingest settings: the broker connection, the persistent session and the batching that decides
when messages are acknowledged. A section (``[ingest]``) of the fleet's one Settings object."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["IngestSettings"]


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Broker host; empty means this fleet process runs no ingest (an API-only replica).
    host: str = ""
    port: int = Field(default=1883, ge=1, le=65535)
    #: The MQTT client: paho-mqtt (manual_ack), or the lean consumer of fleet/ingest/wire.py
    #: (same guarantees, a fraction of paho's per-message cost).
    client: Literal["paho", "lean"] = "paho"
    #: Stable per replica: the broker keeps this client's session (subscription and queued
    #: messages) while it is away. Empty: "fleet-ingest-<hostname>".
    client_id: str = ""
    #: Replicas with the same group share the load (MQTT 5 ``$share/<group>/edgefleet/v1/#``).
    share_group: str = Field(default="fleet", min_length=1, pattern=r"^[^/+#]+$")
    #: How long the broker keeps the session of a replica that is gone (seconds).
    session_expiry_s: int = Field(default=7 * 86400, ge=60)
    keepalive_s: int = Field(default=30, ge=5)
    #: A batch is committed, then acknowledged, when it holds batch_max messages or its first
    #: message has waited batch_wait_s.
    batch_max: int = Field(default=500, ge=1)
    batch_wait_s: float = Field(default=0.05, gt=0)
    #: Messages the broker may have in flight to us unacknowledged (MQTT 5 Receive Maximum).
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: A device's last_seen is written at most this often per device (ingest at 20k msg/s
    #: cannot afford a registry write per message; offline detection does not use it).
    touch_interval_s: float = Field(default=5.0, ge=0)
    #: Also read retained state/status without the share (shared subscriptions never get
    #: retained messages): the first start of a fleet learns every device's state.
    bootstrap_retained: bool = True
    #: Mutual TLS, as provisioning issues it (all three, or none).
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: At most one log line per gateway and reason in this many seconds.
    reject_log_interval_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _tls_complete(self) -> IngestSettings:
        given = [p is not None for p in (self.ca_file, self.cert_file, self.key_file)]
        if any(given) and not all(given):
            raise ValueError("TLS needs ca_file, cert_file and key_file together")
        if self.batch_max > self.receive_maximum:
            raise ValueError("batch_max larger than receive_maximum: a batch could never fill")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"fleet-ingest-{socket.gethostname()}"
