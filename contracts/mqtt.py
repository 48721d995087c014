"""The MQTT contract, said once: topic building and parsing, and the versioned payload models.

The gateway publishes through it and the fleet ingests through it; neither imports the other.
ARCHITECTURE.md ("MQTT topics") is the prose; this module is the executable form.

Topic tree (``edgefleet/v1`` is :data:`TOPIC_ROOT`)::

    edgefleet/v1/<gateway>/status                    gateway status, retained, Last Will "offline"
    edgefleet/v1/<gateway>/ack                       command acknowledgements
    edgefleet/v1/<gateway>/event                     gateway events (rule fired, outbox replaced)
    edgefleet/v1/<gateway>/cmd/<device>/<action>     fleet -> gateway commands
    edgefleet/v1/<gateway>/<device>/<channel>        telemetry | alarm | state | drops | event

Device and gateway ids are one topic level each: no ``/``, ``+``, ``#`` or NUL, and a device is
never called ``status``, ``ack``, ``event`` or ``cmd`` (the names of gateway-level channels).

Delivery accounting (docs/mqtt.md). Every device message that the gateway's outbox numbers
(telemetry, alarm, state, event) carries ``epoch`` and ``seq``:

- ``epoch`` is a random id (16 hex digits) made once, when the gateway's outbox database is
  created, and kept in it: it survives restarts and power cuts, and changes only with a new
  database (a replaced SD card, a quarantined outbox). A consumer counts per (device, epoch) and
  never compares seqs of two epochs, so a new database's seq 1 is not mistaken for a duplicate.
- ``seq`` is gap-free and strictly increasing per device within an epoch, shared by the
  device's numbered channels.

Telemetry that the gateway drops by its declared disk policy is reported on the ``drops``
channel (QoS 1, never itself dropped, stored in the same transaction as the drop) as inclusive
seq ranges with a ``reason`` (``disk_bound``, ``disk_full``), so for every (device, epoch):
delivered + declared drops = produced (max seq).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "DEVICE_CHANNELS",
    "GATEWAY_CHANNELS",
    "OTA_FINAL",
    "OTA_PHASES",
    "TOPIC_ROOT",
    "AckPayload",
    "AlarmPayload",
    "ContractError",
    "DropsPayload",
    "EventPayload",
    "GatewayStatusPayload",
    "OtaCommand",
    "OtaEvent",
    "StatePayload",
    "TelemetryPayload",
    "Topic",
    "ack_topic",
    "command_filter",
    "command_topic",
    "device_topic",
    "dumps",
    "event_topic",
    "parse_payload",
    "parse_topic",
    "rfc3339",
    "status_topic",
    "subscription",
    "valid_id",
]

TOPIC_ROOT = "edgefleet/v1"
VERSION = 1

#: Channels under a device; all QoS 1 except ``state``, which is retained.
DEVICE_CHANNELS = frozenset({"telemetry", "alarm", "state", "drops", "event"})
#: Channels directly under a gateway (``cmd`` has two more levels).
GATEWAY_CHANNELS = frozenset({"status", "ack", "event", "cmd"})
_FORBIDDEN_IN_ID = frozenset("/+#\x00")


class ContractError(ValueError):
    """A topic or payload that does not follow the contract; the message says what and where."""


def valid_id(value: str) -> bool:
    """A gateway or device id usable as one topic level."""
    return bool(value) and not (_FORBIDDEN_IN_ID & set(value)) and value not in GATEWAY_CHANNELS


# -- topics -----------------------------------------------------------------------------------
def device_topic(gateway: str, device: str, channel: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/{device}/{channel}"


def status_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/status"


def ack_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/ack"


def event_topic(gateway: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/event"


def command_topic(gateway: str, device: str, action: str) -> str:
    return f"{TOPIC_ROOT}/{gateway}/cmd/{device}/{action}"


def command_filter(gateway: str) -> str:
    """What a gateway subscribes to for its commands."""
    return f"{TOPIC_ROOT}/{gateway}/cmd/#"


def subscription(gateway: str = "+", share_group: str | None = None) -> str:
    """Everything a consumer reads (``edgefleet/v1/#``), optionally as an MQTT 5 shared
    subscription ``$share/<group>/...`` so several fleet replicas split the load."""
    base = f"{TOPIC_ROOT}/#" if gateway == "+" else f"{TOPIC_ROOT}/{gateway}/#"
    return f"$share/{share_group}/{base}" if share_group else base


@dataclass(frozen=True)
class Topic:
    """A parsed topic. ``device`` is None for gateway-level channels; ``action`` only for cmd."""

    gateway: str
    channel: str
    device: str | None = None
    action: str | None = None


def parse_topic(topic: str) -> Topic:
    """Pure: a topic string -> :class:`Topic`, or :class:`ContractError` naming what is wrong."""
    prefix = TOPIC_ROOT + "/"
    if not topic.startswith(prefix):
        raise ContractError(f"topic {topic!r} is not under {TOPIC_ROOT}/")
    parts = topic[len(prefix):].split("/")
    if len(parts) < 2 or not all(parts):
        raise ContractError(f"topic {topic!r}: expected <gateway>/<channel> or "
                            "<gateway>/<device>/<channel>")
    gateway = parts[0]
    if len(parts) == 2:
        if parts[1] in ("status", "ack", "event"):
            return Topic(gateway, parts[1])
        raise ContractError(f"topic {topic!r}: unknown gateway channel {parts[1]!r}")
    if parts[1] == "cmd":
        if len(parts) < 4:
            raise ContractError(f"topic {topic!r}: command topics are cmd/<device>/<action>")
        return Topic(gateway, "cmd", parts[2], "/".join(parts[3:]))
    if len(parts) == 3 and parts[2] in DEVICE_CHANNELS:
        return Topic(gateway, parts[2], parts[1])
    raise ContractError(f"topic {topic!r}: unknown device channel {parts[-1]!r}")


# -- payloads ---------------------------------------------------------------------------------
Seq = Annotated[int, Field(ge=1)]
Epoch = Annotated[str, Field(min_length=1, max_length=64)]


class _Payload(BaseModel):
    # Unknown fields are kept (a newer gateway may add some); required ones are enforced.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    v: Literal[1] = 1


class _DeviceMessage(_Payload):
    device: str = Field(min_length=1)
    ts: AwareDatetime
    epoch: Epoch
    seq: Seq


class TelemetryPayload(_DeviceMessage):
    device_class: str = Field(alias="class")
    values: dict[str, float]
    units: dict[str, str] = Field(default_factory=dict)


class AlarmPayload(_DeviceMessage):
    device_class: str = Field(alias="class")
    alarm_id: str = Field(min_length=1)
    type: str = Field(min_length=1)
    state: Literal["raised", "cleared"]
    severity: str | None = None
    location: str = ""
    description: str = ""


class StatePayload(_DeviceMessage):
    device_class: str = Field(alias="class")
    online: bool
    firmware: str | None = None
    faults: list[str] = Field(default_factory=list)
    status: list[str] = Field(default_factory=list)
    boot_count: int = 0
    location: str = ""
    reason: str = ""


class DropsPayload(_Payload):
    """Telemetry seqs the gateway dropped by its declared disk policy. ``ranges`` are inclusive
    ``[first, last]`` pairs; every seq in them that never arrives was dropped, declared."""

    device: str = Field(min_length=1)
    epoch: Epoch
    ranges: list[tuple[Seq, Seq]]
    reason: str = Field(min_length=1)
    ts: AwareDatetime | None = None


class EventPayload(_Payload):
    """A device event (a fire panel's printer line that is not an alarm) or a gateway event."""

    ts: AwareDatetime
    event: str | None = None
    kind: str | None = None
    device: str | None = None
    epoch: Epoch | None = None
    seq: Seq | None = None


#: The phases of one OTA delivery to one device, in order; the last three end it.
#: ``confirmed`` is the only success: the device booted the new image as a trial and the
#: gateway confirmed it after its healthy period (``trial_confirmed``).
OTA_PHASES = ("accepted", "downloading", "verified", "queued", "transferring", "committed",
              "trial", "confirmed", "failed", "cancelled")
OTA_FINAL = frozenset({"confirmed", "failed", "cancelled"})


class OtaCommand(_Payload):
    """The body of ``cmd/<device>/ota`` (fleet -> gateway).

    ``op`` ``start``: fetch the release bundle (an uncompressed tar of a release directory:
    ``manifest.json``, ``manifest.sig``, ``files/...``) from ``url`` with ``Authorization:
    Bearer <token>``, check it is ``size`` bytes with SHA-256 ``sha256``, verify its signature
    against the gateway's own trust, cache it, and deliver it to the device. ``op`` ``cancel``:
    stop the transfer of ``campaign`` to the device before its commit (a no-op when none runs;
    refused, ack ``ok: false``, once the image is committed on the device). A repeated
    ``start`` of a release already delivered or in flight for that device resumes or re-reports,
    never restarts from zero."""

    id: str = Field(min_length=1)
    op: Literal["start", "cancel"]
    campaign: str = Field(min_length=1)
    release: str | None = None  # the version, "1.4.0"
    url: str | None = None
    token: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: int | None = Field(default=None, ge=1)


class OtaEvent(_DeviceMessage):
    """One OTA progress report on the device's ``event`` channel (``"event": "ota"``).

    Reported when the phase changes and, while ``transferring``, at most every few seconds
    with ``offset`` (bytes the device holds) of ``size``. ``reason`` says why on ``failed``
    (a contracts.release reason code such as ``bad_signature`` or ``downgrade``, or a delivery
    one such as ``download``, ``device_refused``, ``rolled_back``, ``timeout``, ``unsupported``;
    docs/mqtt.md has the list). A gateway may add ``detail``, ``code``, ``refusal`` and
    ``command``."""

    event: Literal["ota"]
    campaign: str = Field(min_length=1)
    release: str = Field(min_length=1)
    phase: Literal["accepted", "downloading", "verified", "queued", "transferring", "committed",
                   "trial", "confirmed", "failed", "cancelled"]
    offset: int = Field(default=0, ge=0)
    size: int = Field(default=0, ge=0)
    reason: str = ""


class GatewayStatusPayload(_Payload):
    gateway: str
    online: bool
    ts: AwareDatetime | None = None
    health: dict[str, Any] = Field(default_factory=dict)


class AckPayload(_Payload):
    id: str | None
    ok: bool
    error: str | None = None
    ts: AwareDatetime | None = None


_MODELS: dict[str, type[_Payload]] = {
    "telemetry": TelemetryPayload,
    "alarm": AlarmPayload,
    "state": StatePayload,
    "drops": DropsPayload,
    "event": EventPayload,
    "status": GatewayStatusPayload,
    "ack": AckPayload,
}


def parse_payload(channel: str, payload: bytes | str) -> _Payload:
    """Pure: validate a payload of ``channel``; :class:`ContractError` names the first problem."""
    model = _MODELS.get(channel)
    if model is None:
        raise ContractError(f"no payload model for channel {channel!r}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise ContractError(f"{channel} payload: {where}: {first['msg']}") from None


def rfc3339(ts: datetime) -> str:
    """``ts`` as the contract writes it: RFC 3339 UTC with milliseconds and a ``Z``."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as every payload goes on the wire. NaN and Infinity are refused
    (ValueError): they are not JSON, and a consumer would reject the whole message."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
