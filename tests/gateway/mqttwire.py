"""A byte-level MQTT observer between a client and a real Mosquitto (tests only).

It forwards every byte both ways and reads the MQTT 5 fixed headers as they pass, to see what a
broker would see: how many QoS 1 PUBLISHes of the client await their PUBACK at any moment (the
Receive Maximum rule, which Mosquitto 2.0 does not enforce for QoS 1 and so cannot report).

Fault injection at the wire, for reason codes Mosquitto cannot be made to produce: ``refuse``
maps a text found in a PUBLISH's topic or payload to a list of PUBACK reason codes to put in
place of the broker's next PUBACKs for such messages (0x97 quota exceeded, 0x80 unspecified
error), and ``suback_code`` replaces the reason codes of every SUBACK (Mosquitto 2.0 grants
subscriptions that its ACL will never deliver on). The real broker still receives, stores and
forwards everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.gateway.mosquitto import HOST, Broker, free_port

PUBLISH, PUBACK, SUBACK = 3, 4, 9


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packets(buf: bytearray) -> Iterator[tuple[int, bytes, bytes]]:
    """Complete packets at the head of ``buf`` (consumed): (type, flags byte, body)."""
    while len(buf) >= 2:
        length, mult, i = 0, 1, 1
        while True:
            if i >= len(buf):
                return
            byte = buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        if len(buf) < i + length:
            return
        first, body = buf[0], bytes(buf[i:i + length])
        del buf[:i + length]
        yield first >> 4, bytes([first]), body


class WireProxy:
    """Listen on a free port; each client connection gets its own connection to ``broker``."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.host, self.port = HOST, free_port()
        self.outstanding: set[int] = set()  # packet ids of QoS 1/2 PUBLISHes awaiting PUBACK
        self.max_outstanding = 0
        self.publishes = 0
        self.refuse: dict[str, list[int]] = {}
        self.injected: list[tuple[str, int]] = []
        self.suback_code: int | None = None
        self._topics: dict[int, str] = {}  # packet id -> topic + " " + payload
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WireProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        """Drop every connection at once, as a broken uplink would."""
        def close_all() -> None:
            for w in list(self._writers):
                w.transport.abort()
        self._loop.call_soon_threadsafe(close_all)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, c_reader: asyncio.StreamReader,
                     c_writer: asyncio.StreamWriter) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        except OSError:
            c_writer.close()
            return
        self._writers |= {c_writer, b_writer}
        with self._lock:
            self.outstanding.clear()  # a new connection: nothing of the old one is pending
        up = asyncio.create_task(self._pump(c_reader, b_writer, upstream=True))
        down = asyncio.create_task(self._pump(b_reader, c_writer, upstream=False))
        await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for w in (c_writer, b_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    upstream: bool) -> None:
        buf = bytearray()
        while data := await reader.read(65536):
            buf += data
            out = bytearray()
            for kind, first, body in _packets(buf):
                out += self._client_packet(kind, first, body) if upstream \
                    else self._broker_packet(kind, first, body)
            writer.write(out)
            await writer.drain()

    def _client_packet(self, kind: int, first: bytes, body: bytes) -> bytes:
        if kind == PUBLISH and (first[0] >> 1) & 3:
            topic_len = int.from_bytes(body[:2], "big")
            topic = body[2:2 + topic_len].decode()
            pid = int.from_bytes(body[2 + topic_len:4 + topic_len], "big")
            topic += " " + body[4 + topic_len:].decode(errors="replace")
            with self._lock:
                self.outstanding.add(pid)
                self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
                self.publishes += 1
                self._topics[pid] = topic
        return first + _varint(len(body)) + body

    def _broker_packet(self, kind: int, first: bytes, body: bytes) -> bytes:
        if kind == PUBACK:
            pid = int.from_bytes(body[:2], "big")
            with self._lock:
                self.outstanding.discard(pid)
                topic = self._topics.pop(pid, "")
                codes = next((c for t, c in self.refuse.items() if t in topic and c), None)
                if codes is not None:
                    code = codes.pop(0)
                    self.injected.append((topic.split(" ", 1)[0], code))
                    body = body[:2] + bytes([code])
        elif kind == SUBACK and self.suback_code is not None:
            props_len = body[2]  # < 128 here: one varint byte
            head = 3 + props_len
            body = body[:head] + bytes([self.suback_code]) * (len(body) - head)
        return first + _varint(len(body)) + body
