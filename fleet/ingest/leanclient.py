"""A lean MQTT 5 consumer on one socket: the :mod:`fleet.ingest.wire` codec plus a reader
thread, for ingest processes where paho's per-message cost is the limit (``[ingest] client =
"lean"``).

It does only what loss-proof ingest needs: connect with ``clean_start`` off, a session expiry
and a receive maximum; subscribe; hand every PUBLISH to a callback; send the PUBACKs of a
committed batch in one write; keep the connection alive with PINGREQ; reconnect with capped
back-off after any error. Acknowledgements are never sent automatically.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable

from fleet.ingest import wire

__all__ = ["LeanClient"]

log = logging.getLogger(__name__)

OnMessage = Callable[[str, bytes, int, int], None]


class LeanClient:
    def __init__(self, host: str, port: int, client_id: str, *, keepalive_s: int,
                 session_expiry_s: int, receive_maximum: int,
                 subscriptions: list[tuple[str, int]], on_message: OnMessage,
                 on_connect: Callable[[bool], None], on_subscribe: Callable[[bool], None],
                 on_disconnect: Callable[[str], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.keepalive_s = keepalive_s
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.subscriptions = subscriptions
        self.on_message, self.on_connect = on_message, on_connect
        self.on_subscribe, self.on_disconnect = on_subscribe, on_disconnect
        self.tls = tls
        self._sock: socket.socket | None = None
        #: Which connection this is (1, 2, ...): packet ids belong to one connection.
        self.connection = 0
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- sending (any thread) -----------------------------------------------------------------
    def _send(self, data: bytes) -> bool:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall(data)
                return True
            except OSError:
                return False

    def ack_many(self, packet_ids: list[int], connection: int) -> bool:
        """PUBACK every id, in order, in one write, if ``connection`` (the one the messages
        arrived on) is still the current one; otherwise (or if it is gone) False: the broker
        redelivers those messages on the next connection, where their ids are different."""
        if not packet_ids:
            return True
        data = wire.puback_many(packet_ids)
        with self._send_lock:
            if self._sock is None or self.connection != connection:
                return False
            try:
                self._sock.sendall(data)
                return True
            except OSError:
                return False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ingest-mqtt", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._send(wire.disconnect())
        with self._send_lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            try:
                self._session()
                delay = 0.1
            except (OSError, wire.WireError) as exc:
                if self._stop.is_set():
                    break
                self.on_disconnect(str(exc) or type(exc).__name__)
            finally:
                with self._send_lock:
                    if self._sock is not None:
                        self._sock.close()
                    self._sock = None
            if self._stop.wait(delay * (0.5 + random.random() / 2)):
                break
            delay = min(delay * 2, 5.0)

    def _session(self) -> None:
        """One connection, until it breaks or the client stops."""
        raw = socket.create_connection((self.host, self.port), timeout=10)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = (self.tls.wrap_socket(raw, server_hostname=self.host)
                               if self.tls is not None else raw)
        with self._send_lock:
            self._sock = sock
            self.connection += 1
        sock.sendall(wire.connect(self.client_id, keepalive_s=self.keepalive_s,
                                  session_expiry_s=self.session_expiry_s,
                                  receive_maximum=self.receive_maximum))
        tick = max(1.0, self.keepalive_s / 2)
        sock.settimeout(tick)
        buf = bytearray()
        last_heard = time.monotonic()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(1 << 16)
            except TimeoutError:
                if time.monotonic() - last_heard > self.keepalive_s * 1.5:
                    raise OSError("broker silent for 1.5 keepalive intervals") from None
                self._send(wire.pingreq())
                continue
            if not chunk:
                raise OSError("broker closed the connection")
            last_heard = time.monotonic()
            buf += chunk
            for packet in wire.split(buf):
                self._handle(packet)

    def _handle(self, packet: wire.Packet) -> None:
        if isinstance(packet, wire.Publish):
            try:
                topic = packet.topic.decode()
            except UnicodeDecodeError:
                topic = "<invalid UTF-8>"
            self.on_message(topic, packet.payload, packet.packet_id, packet.qos)
        elif isinstance(packet, wire.Connack):
            if packet.reason >= 0x80:
                raise OSError(f"broker refused the connection (reason {packet.reason:#x})")
            self.on_connect(packet.session_present)
            self._send(wire.subscribe(1, self.subscriptions))
        elif isinstance(packet, wire.Suback):
            self.on_subscribe(all(r < 0x80 for r in packet.reasons))
        elif isinstance(packet, wire.Disconnect):
            raise OSError(f"broker disconnected us (reason {packet.reason:#x})")
