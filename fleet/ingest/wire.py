"""The few MQTT 5 packets a loss-proof consumer needs, as bytes in and bytes out: no sockets.

paho-mqtt spends 80-170 µs of Python per received message (FIELD-NOTES); a consumer that only
subscribes, receives QoS 1 PUBLISH packets and acknowledges them later needs far less. This module
encodes CONNECT (clean_start off, session expiry, receive maximum), SUBSCRIBE, PUBACK, PINGREQ and
DISCONNECT, and splits a byte stream into packets, decoding CONNACK, SUBACK, PUBLISH and
DISCONNECT. :mod:`fleet.ingest.leanclient` puts it on a socket. Byte-vector tests in
``tests/fleet/test_ingest_wire.py``; the loss-proof tests run ingest on it against Mosquitto.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["Connack", "Disconnect", "Packet", "Pingresp", "Publish", "Suback", "WireError",
           "connect", "disconnect", "pingreq", "puback", "puback_many", "split", "subscribe"]

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
PROP_SESSION_EXPIRY, PROP_RECEIVE_MAXIMUM = 0x11, 0x21


class WireError(ValueError):
    """A malformed packet from the broker: the connection is dropped and made again."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(client_id: str, *, keepalive_s: int, session_expiry_s: int,
            receive_maximum: int, clean_start: bool = False) -> bytes:
    props = (bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", session_expiry_s)
             + bytes([PROP_RECEIVE_MAXIMUM]) + struct.pack("!H", receive_maximum))
    flags = 0x02 if clean_start else 0x00
    body = (_string("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s)
            + _varint(len(props)) + props + _string(client_id))
    return _packet(CONNECT, body)


def subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """``filters``: (topic filter, options byte: QoS | no-local<<2 | retain-as-published<<3 |
    retain-handling<<4)."""
    body = struct.pack("!H", packet_id) + b"\x00" + b"".join(
        _string(f) + bytes([options]) for f, options in filters)
    return _packet(SUBSCRIBE, body)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", packet_id)


def puback_many(packet_ids: list[int]) -> bytes:
    """The PUBACKs of a whole batch, in order, as one write."""
    return b"".join(b"\x40\x02" + struct.pack("!H", p) for p in packet_ids)


def pingreq() -> bytes:
    return b"\xc0\x00"


def disconnect() -> bytes:
    """Normal disconnection; the session stays for its expiry interval."""
    return b"\xe0\x00"


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reasons: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    topic: bytes
    payload: bytes
    qos: int
    packet_id: int
    retain: bool
    dup: bool


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int


Packet = Connack | Suback | Publish | Pingresp | Disconnect


def _read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when the buffer ends inside the number."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise WireError("a variable byte integer longer than 4 bytes")


def _decode(first: int, body: bytes) -> Packet | None:
    kind = first & 0xF0
    if kind == PUBLISH:
        qos = (first >> 1) & 0x03
        if qos == 3 or len(body) < 2:
            raise WireError("bad PUBLISH header")
        tlen = struct.unpack_from("!H", body)[0]
        pos = 2 + tlen
        packet_id = 0
        if qos:
            packet_id = struct.unpack_from("!H", body, pos)[0]
            pos += 2
        props = _read_varint(body, pos)
        if props is None:
            raise WireError("PUBLISH ends inside its properties")
        plen, pos = props
        return Publish(body[2:2 + tlen], body[pos + plen:], qos, packet_id, bool(first & 1),
                       bool(first & 8))
    if kind == CONNACK:
        if len(body) < 2:
            raise WireError("short CONNACK")
        return Connack(bool(body[0] & 1), body[1])
    if kind == SUBACK:
        packet_id = struct.unpack_from("!H", body)[0]
        props = _read_varint(body, 2)
        if props is None:
            raise WireError("SUBACK ends inside its properties")
        plen, pos = props
        return Suback(packet_id, tuple(body[pos + plen:]))
    if kind == PINGRESP:
        return Pingresp()
    if kind == DISCONNECT:
        return Disconnect(body[0] if body else 0)
    return None  # PUBACK/PUBREC... for a publisher; AUTH: not used by this consumer


def split(buf: bytearray) -> list[Packet]:
    """Take every complete packet off the front of ``buf`` (in place) and decode it; a partial
    packet stays in ``buf`` for the next read."""
    out: list[Packet] = []
    pos, end = 0, len(buf)
    view = memoryview(buf)
    try:
        while pos + 2 <= end:
            length = _read_varint(view, pos + 1)
            if length is None:
                break
            size, start = length
            if start + size > end:
                break
            packet = _decode(buf[pos], bytes(view[start:start + size]))
            if packet is not None:
                out.append(packet)
            pos = start + size
    finally:
        view.release()
    del buf[:pos]
    return out
