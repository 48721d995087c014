"""From an MQTT message to a contract payload, or to a counted reject: pure, no I/O.

Every message ingest receives goes through :func:`decode` exactly once. It either becomes a
:class:`Decoded` (the topic parsed by ``contracts.mqtt.parse_topic``, the payload validated by the
channel's model) or a :class:`Rejected` carrying the gateway it came from (``?`` when the topic
names none) and a short reason for the reject counters. A reject is acknowledged like any other
message once its count is committed: redelivering a malformed message forever helps nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from contracts.mqtt import TOPIC_ROOT, ContractError, OtaEvent, parse_payload, parse_topic

__all__ = ["UNKNOWN_GATEWAY", "Decoded", "Rejected", "decode"]

UNKNOWN_GATEWAY = "?"

#: Channels whose payload names a device, which must be the topic's device.
_DEVICE_PAYLOADS = frozenset({"telemetry", "alarm", "state", "drops"})


@dataclass(frozen=True, slots=True)
class Decoded:
    gateway: str
    channel: str
    device: str | None
    payload: object  # the channel's contract model (TelemetryPayload, ...); None for commands


@dataclass(frozen=True, slots=True)
class Rejected:
    gateway: str
    reason: str
    detail: str


def _gateway_of(topic: str) -> str:
    prefix = TOPIC_ROOT + "/"
    if topic.startswith(prefix):
        first = topic[len(prefix):].split("/", 1)[0]
        if first:
            return first[:100]
    return UNKNOWN_GATEWAY


def decode(topic: str, payload: bytes) -> Decoded | Rejected:
    try:
        parsed = parse_topic(topic)
    except ContractError as exc:
        return Rejected(_gateway_of(topic), "bad-topic", str(exc))
    if parsed.channel == "cmd":
        # The fleet's own commands to gateways, seen because it reads edgefleet/v1/#.
        return Decoded(parsed.gateway, "cmd", parsed.device, None)
    channel = parsed.channel if parsed.device is None or parsed.channel != "event" \
        else "event"
    try:
        body = parse_payload(channel, payload)
    except ContractError as exc:
        return Rejected(parsed.gateway, f"bad-{channel}", str(exc))
    if parsed.device is not None and parsed.channel == "event" \
            and getattr(body, "event", None) == "ota":
        # OTA progress has a stricter model of its own (campaign, release, phase, offset).
        try:
            body = OtaEvent.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            return Rejected(parsed.gateway, "bad-ota-event", f"ota event: {where}: "
                                                              f"{first['msg']}")
        if body.device != parsed.device:
            return Rejected(parsed.gateway, "device-mismatch",
                            f"topic names device {parsed.device!r}, payload {body.device!r}")
    if parsed.channel in _DEVICE_PAYLOADS:
        said = getattr(body, "device", None)
        if said != parsed.device:
            return Rejected(parsed.gateway, "device-mismatch",
                            f"topic names device {parsed.device!r}, payload {said!r}")
    return Decoded(parsed.gateway, parsed.channel, parsed.device, body)
