"""The one place that reaches into aiomqtt's private API: a client that keeps PUBACK reason codes.

Why a subclass of aiomqtt.Client rather than paho directly: aiomqtt already owns the hard part of
running paho on an asyncio loop (socket reader/writer registration, keepalive task, the
CONNECT in an executor) and the architecture names it. Its one gap is that
``Client.publish()`` drops the PUBACK reason code (aiomqtt 2.5.1 ``_on_publish`` only sets an
event). :class:`PubackClient` adds ``publish_many()`` / ``publish_tracked()``, which return one
future per message that resolves with the PUBACK's reason code (an int).

The publish hot path is the gateway's, not paho's, because paho's costs ~60 µs per QoS 1 message
on a Pi-class core (measured with cProfile in bench/bench_mqtt.py: a Properties and two
ReasonCode objects per PUBACK, one send() and three recv() system calls per message):

- ``publish_many()`` encodes the MQTT 5 PUBLISH packets itself (fixed header, topic, packet id
  from paho's own counter, taken under its lock once per window, an empty property block,
  payload) and sends the whole window with one send() straight to the socket when paho has
  nothing queued (what the socket does not take goes on paho's outgoing queue, as before).
- PUBACKs of those packet ids are settled by a small handler put in place of paho's
  ``_handle_pubackcomp`` (packet id and reason code read from the bytes); anything else (a
  PUBACK paho itself is waiting for) goes on to paho's handler.
- Reads are buffered (64 kB per recv() instead of three per packet) and ``loop_read`` reads
  until the socket would block (on plain TCP, until a read comes back short), instead of once
  per event-loop wake-up; our PUBACKs are settled straight from that buffer, everything else
  goes through paho's reader.

No PUBACK can be settled before its future exists: the futures are registered before the
window is sent, and reading is only ever done from the event loop's reader callback (aiomqtt
registers paho's socket with the loop), never inside a publish.

It relies on private names of aiomqtt 2.5 and paho 2.x (:data:`PRIVATE_API` and
:data:`PAHO_PRIVATE_API`): ``Client._client`` (the paho client), ``Client._loop``,
``Client._disconnected``, ``Client._connected``, aiomqtt's ``_on_publish`` / ``_on_connect``; paho's
``_handle_pubackcomp``, ``_sock_recv``, ``_sock_send``, ``_packet_read``, ``_packet_queue``,
``_out_packet``, ``_mid_generate_mutex``, ``_last_mid``, ``_last_msg_out``, ``_mid_generate``,
``_in_packet``, ``_sock``, ``_loop_rc_handle``, ``_msgtime_mutex`` and
``_last_bytes_received``. :func:`check_private_api` verifies them on a real instance; a test
calls it, so an upgrade that renames one fails that test by name instead of failing in the
field.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Iterable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["PAHO_PRIVATE_API", "PRIVATE_API", "PubackClient", "check_private_api",
           "reason_name"]

_PUBLISH = 0x30
_PUBACK = 0x40
_READ_CHUNK = 65536  # per recv(); more than a TLS record holds (16 kB)
_MAX_PACKETS_PER_READ = 4096

#: Private attributes of aiomqtt.Client this module depends on, with the type each must have.
PRIVATE_API: dict[str, type | tuple[type, ...]] = {
    "_client": paho.Client,
    "_loop": asyncio.AbstractEventLoop,
    "_disconnected": asyncio.Future,
    "_connected": asyncio.Future,
}
#: aiomqtt.Client methods this module overrides and calls with super(); paho calls them with
#: the signatures below (MQTT 5, paho CallbackAPIVersion.VERSION2).
OVERRIDDEN = ("_on_publish", "_on_connect", "_on_socket_open")
#: paho.Client private methods and attributes the fast path uses or replaces per instance.
PAHO_PRIVATE_API = ("_handle_pubackcomp", "_sock_recv", "_sock_send", "_packet_read",
                    "_packet_queue", "_out_packet", "_mid_generate", "_mid_generate_mutex",
                    "_last_mid", "_loop_rc_handle",
                    "_in_packet", "_sock", "_msgtime_mutex", "_last_bytes_received",
                    "_last_msg_out")


def check_private_api(client: aiomqtt.Client) -> list[str]:
    """What of :data:`PRIVATE_API` this aiomqtt no longer provides (empty when all is well)."""
    missing = []
    for name, kind in PRIVATE_API.items():
        if not isinstance(getattr(client, name, None), kind):
            missing.append(f"aiomqtt.Client.{name} is not a {kind}")
    for name in OVERRIDDEN:
        if not callable(getattr(aiomqtt.Client, name, None)):
            missing.append(f"aiomqtt.Client.{name} is gone")
    paho_client = getattr(client, "_client", None)
    if isinstance(paho_client, paho.Client):
        if paho_client.on_publish is None or paho_client.on_connect is None:
            missing.append("aiomqtt no longer installs paho's on_publish/on_connect")
        missing += [f"paho.Client.{name} is gone" for name in PAHO_PRIVATE_API
                    if not hasattr(paho_client, name)]
        if getattr(paho_client, "_in_packet", {}).get("packet", None) is None:
            missing.append("paho.Client._in_packet has no 'packet'")
    return missing


def reason_name(code: int | ReasonCode, packet_type: int = PacketTypes.PUBACK) -> str:
    """The MQTT 5 name of a reason code ("Quota exceeded"), or "reason code N"."""
    value = code.value if isinstance(code, ReasonCode) else code
    try:
        return ReasonCode(packet_type, identifier=value).getName()
    except (KeyError, ValueError):
        return f"reason code {value}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class PubackClient(aiomqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pubacks: dict[int, asyncio.Future[int]] = {}
        self.connack_properties: Properties | None = None
        self._topics: dict[str, bytes] = {}
        self._rbuf = bytearray()
        c = self._client
        self._paho_handle_puback = c._handle_pubackcomp
        self._paho_recv = c._sock_recv
        # per instance: only this client's paho takes the fast path
        c._handle_pubackcomp = self._handle_pubackcomp  # type: ignore[method-assign]
        c._sock_recv = self._buffered_recv  # type: ignore[method-assign]
        c.loop_read = self._loop_read  # type: ignore[method-assign]

    # -- publishing ------------------------------------------------------------------------
    def publish_many(self, messages: Iterable[tuple[str, bytes, int, bool]]
                     ) -> list[asyncio.Future[int]]:
        """Queue PUBLISHes (topic, payload, qos 0 or 1, retain) as one write. Each future
        resolves with its PUBACK's reason code (QoS 0: 0 at once) or fails with MqttError when
        the connection is lost first."""
        c = self._client
        if c._sock is None:
            raise aiomqtt.MqttCodeError(paho.MQTT_ERR_NO_CONN, "Could not publish message")
        out = bytearray()
        futures: list[asyncio.Future[int]] = []
        create_future = self._loop.create_future
        topics = self._topics
        pubacks = self._pubacks
        with c._mid_generate_mutex:  # paho's packet ids, taken for the batch at once
            mid = c._last_mid
            try:
                for topic, payload, qos, retain in messages:
                    if qos not in (0, 1):
                        raise ValueError(f"QoS {qos} is not supported on the fast path")
                    head = topics.get(topic)
                    if head is None:
                        raw = topic.encode()
                        if not raw or b"+" in raw or b"#" in raw or len(raw) > 65535:
                            raise ValueError(f"not a topic to publish to: {topic!r}")
                        head = topics[topic] = len(raw).to_bytes(2, "big") + raw
                    fut = create_future()
                    if qos:
                        mid = mid + 1 if mid < 65535 else 1  # as paho's _mid_generate
                        body_len = len(head) + 3 + len(payload)
                        out.append(_PUBLISH | 2 | retain)
                        if 127 < body_len < 16384:  # telemetry's size: two bytes, no call
                            out.append(body_len & 0x7F | 0x80)
                            out.append(body_len >> 7)
                        else:
                            out += _varint(body_len)
                        out += head
                        out += mid.to_bytes(2, "big")
                        pubacks[mid] = fut
                    else:
                        body_len = len(head) + 1 + len(payload)
                        out.append(_PUBLISH | retain)
                        out += _varint(body_len)
                        out += head
                        fut.set_result(0)
                    out += b"\x00"  # no properties
                    out += payload
                    futures.append(fut)
            finally:
                c._last_mid = mid
        if out:
            self._write(out)
        return futures

    def _write(self, out: bytearray) -> None:
        """Send now what the socket takes; queue the rest on paho's writer.

        The usual case (nothing of paho's waiting, the socket's buffer has room) is one send()
        and nothing else: paho's queue would cost a wake-up byte on its socketpair, a
        thread-safe call into the loop (a self-pipe write), and a writer registered and removed
        again (two epoll_ctl and one more loop iteration) for every window refill."""
        c = self._client
        sent = 0
        if not c._out_packet:  # else paho's queue goes first, in order
            try:
                sent = c._sock_send(out)  # TLS "want write" comes back as BlockingIOError
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # paho's writer meets the same error and reports the lost connection
            if sent:
                with c._msgtime_mutex:  # keepalive: a PINGREQ only after keepalive idle
                    c._last_msg_out = time.monotonic()
        if sent < len(out):
            # qos=1 on the queue entry: paho then calls no on_publish when it is written
            c._packet_queue(_PUBLISH, bytes(out[sent:]), 0, 1)

    def publish_tracked(self, topic: str, payload: bytes, qos: int,
                        retain: bool) -> asyncio.Future[int]:
        """One PUBLISH (see :meth:`publish_many`)."""
        return self.publish_many(((topic, payload, qos, retain),))[0]

    def _handle_pubackcomp(self, cmd: str) -> MQTTErrorCode:
        if cmd == "PUBACK":
            packet = self._client._in_packet["packet"]
            fut = self._pubacks.pop(int.from_bytes(packet[:2], "big"), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(packet[2] if len(packet) > 2 else 0)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._paho_handle_puback(cmd)  # type: ignore[arg-type]

    # -- reading -----------------------------------------------------------------------------
    def _buffered_recv(self, bufsize: int) -> bytes:
        buf = self._rbuf
        if not buf:
            data = self._paho_recv(_READ_CHUNK)  # BlockingIOError when nothing is there
            if len(data) <= bufsize:
                return data  # b"" is the peer's close
            buf += data
        chunk = bytes(buf[:bufsize])
        del buf[:bufsize]
        return chunk

    def _loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's loop_read, but until the socket would block (bounded per wake-up).

        PUBACKs of our own publishes (4 or 5 bytes, no properties) are settled straight from
        the read buffer; every other packet goes through paho's reader."""
        c = self._client
        buf = self._rbuf
        pubacks = self._pubacks
        settled = 0
        drained = False
        tls = isinstance(c._sock, ssl.SSLSocket)
        for _ in range(_MAX_PACKETS_PER_READ):
            if c._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            if c._in_packet["command"] == 0:  # at a packet boundary
                if not buf:
                    if drained:  # the last read took less than asked: nothing more waits
                        break  # (a later arrival wakes the loop again; epoll is level-triggered)
                    try:
                        data = self._paho_recv(_READ_CHUNK)
                    except BlockingIOError:
                        break
                    if not data:  # the peer closed: paho's reader says so
                        return c._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
                    buf += data
                    # Under TLS a read returns at most one record, and Mosquitto writes one
                    # per packet: a short read says nothing of what waits. Read on until the
                    # socket would block (SSLWantReadError, which paho raises as
                    # BlockingIOError), or every PUBACK costs a trip through the event loop.
                    drained = len(data) < _READ_CHUNK and not tls
                if len(buf) >= 4 and buf[0] == _PUBACK and buf[1] in (2, 3) \
                        and len(buf) >= 2 + buf[1]:
                    fut = pubacks.pop((buf[2] << 8) | buf[3], None)
                    if fut is not None:
                        if not fut.done():
                            fut.set_result(buf[4] if buf[1] == 3 else 0)
                        del buf[:2 + buf[1]]
                        settled += 1
                        continue
            rc = c._packet_read()
            if rc > 0:
                return c._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        else:
            # Bytes left in our buffer: the socket will not wake us for them. (Nothing is left
            # inside OpenSSL: every read asks for _READ_CHUNK, more than a TLS record holds.)
            if self._rbuf:
                self._loop.call_soon(self._read_rest)
        if settled:
            with c._msgtime_mutex:
                c._last_bytes_received = time.monotonic()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _read_rest(self) -> None:
        try:
            self._loop_read()
        except Exception as exc:  # as aiomqtt's reader callback: the connection is broken
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        fut = self._pubacks.pop(mid, None)
        if fut is None:  # one of aiomqtt's own publish() calls
            super()._on_publish(client, userdata, mid, reason_code, properties)
        elif not fut.done():
            fut.set_result(reason_code.value)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho leaves Nagle on: a window refill written while an earlier one is not yet
        # TCP-acknowledged would wait for that ACK (up to the peer's delayed-ACK timer).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._on_socket_open(client, userdata, sock)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None = None) -> None:
        self.connack_properties = properties
        super()._on_connect(client, userdata, flags, reason_code, properties)

    @property
    def receive_maximum(self) -> int:
        """The broker's Receive Maximum: how many QoS 1 PUBLISHes may await a PUBACK."""
        value = getattr(self.connack_properties, "ReceiveMaximum", 65535)
        return int(value)

    async def __aenter__(self) -> PubackClient:
        await super().__aenter__()
        self._disconnected.add_done_callback(self._fail_pending)
        return self

    def _fail_pending(self, disconnected: asyncio.Future[None]) -> None:
        cause = None if disconnected.cancelled() else disconnected.exception()
        pending, self._pubacks = self._pubacks, {}
        for fut in pending.values():
            if not fut.done():
                error = aiomqtt.MqttError(f"connection lost before PUBACK: {cause}")
                error.__cause__ = cause
                fut.set_exception(error)

    def give_up(self) -> None:
        """Stop waiting for the broker: whatever awaits CONNACK or the DISCONNECT's end (in
        aiomqtt's context manager) returns now. For a gateway that is stopping."""
        error = aiomqtt.MqttError("the gateway is stopping")
        if not self._connected.done():
            self._connected.set_exception(error)
        if not self._disconnected.done():
            self._disconnected.set_exception(error)

    def abort(self) -> None:
        """Drop the TCP connection without DISCONNECT, as a power cut would (tests, drills)."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
