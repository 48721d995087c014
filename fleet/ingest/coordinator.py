"""The ingest coordinator: the one owner of the fleet's MQTT subscription.

paho-mqtt 2.x with ``manual_ack=True`` is the only Python client here that lets a consumer hold
back the PUBACK (aiomqtt acknowledges on receipt). The network runs in paho's thread and only
queues each message; the coordinator's own writer thread takes them in batches, hands a batch to
:meth:`fleet.ingest.service.Ingestor.process` (durable when it returns), and then acknowledges
every message of the batch, in arrival order. A crash anywhere before the acknowledgement makes
the broker redeliver (persistent session: ``clean_start=False``, a long session expiry), and the
accounting turns the copies into counted duplicates.

Packet ids are only meaningful on the connection that delivered them: after a reconnect the
broker resends the unacknowledged messages under its own ids and may reuse the old ones for new
messages. So each message carries the connection *generation* it arrived on, and a message is
acknowledged only on that same connection; older ones are written (idempotently) and left to
their redelivered copies, which the accounting acknowledges as duplicates.

With ``[ingest] client = "lean"`` the same coordinator runs on :class:`LeanClient` (the
:mod:`fleet.ingest.wire` codec on one socket) instead of paho: the same session, subscription and
acknowledgement rules, at a fraction of paho's per-message cost; the PUBACKs of a batch go out in
one write, and only on the connection the messages arrived on.

The subscription is ``$share/<group>/edgefleet/v1/#`` at QoS 1: replicas with the same group
split the load. Shared subscriptions never receive retained messages, so a replica also
subscribes to the retained channels (``+/status``, ``+/+/state``) unshared, asking for retained
messages only when that subscription is new.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.mqtt import TOPIC_ROOT, subscription
from fleet.ingest.leanclient import LeanClient
from fleet.ingest.metrics import IngestMetrics
from fleet.ingest.service import Inbound
from fleet.ingest.settings import IngestSettings

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)

#: The retained channels read unshared (see the module docstring).
RETAINED_FILTERS = (f"{TOPIC_ROOT}/+/status", f"{TOPIC_ROOT}/+/+/state")

Process = Callable[[list[Inbound]], Any]


class Coordinator:
    """Owns one paho client and one writer thread; ``start()``/``stop()`` or ``run()``."""

    def __init__(self, settings: IngestSettings, process: Process,
                 metrics: IngestMetrics | None = None, *,
                 retry_backoff: tuple[float, float] = (0.2, 5.0)) -> None:
        if not settings.enabled:
            raise ValueError("ingest has no broker host configured")
        self.settings = settings
        self.process = process
        self.metrics = metrics or IngestMetrics()
        self._backoff = retry_backoff
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._generation = 0
        self._gen_lock = threading.Lock()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._writer: threading.Thread | None = None
        self.lean: LeanClient | None = None
        if settings.client == "lean":
            self.lean = self._build_lean()
        else:
            self.client = self._build_client()

    # -- the MQTT side (paho's thread) --------------------------------------------------------
    def _build_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=s.effective_client_id, protocol=paho.MQTTv5,
                             manual_ack=True)
        if s.ca_file is not None:
            client.tls_set(ca_certs=str(s.ca_file), certfile=str(s.cert_file),
                           keyfile=str(s.key_file))
        client.reconnect_delay_set(0.1, 5.0)  # type: ignore[arg-type]  # floats work
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _subscriptions(self) -> list[tuple[str, int]]:
        """(filter, MQTT 5 subscription options byte): QoS 1; retain handling 1 (retained
        messages only when the subscription is new) for the unshared retained channels."""
        subs = [(subscription(share_group=self.settings.share_group), 1)]
        if self.settings.bootstrap_retained:
            subs += [(f, 1 | 1 << 4) for f in RETAINED_FILTERS]
        return subs

    def _build_lean(self) -> LeanClient:
        s = self.settings
        tls = None
        if s.ca_file is not None:
            tls = ssl.create_default_context(cafile=str(s.ca_file))
            tls.load_cert_chain(str(s.cert_file), str(s.key_file))

        def on_connect(session_present: bool) -> None:
            self._connected(session_present)

        def on_subscribe(ok: bool) -> None:
            if ok:
                log.info("ingest subscribed (share group %r)", s.share_group)
                self._subscribed.set()
            else:
                log.error("broker refused ingest's subscription")

        def on_disconnect(reason: str) -> None:
            self.metrics.connected = False
            self._subscribed.clear()
            if not self._stop.is_set():
                log.warning("ingest lost the broker (%s); reconnecting", reason)

        def on_message(topic: str, payload: bytes, mid: int, qos: int) -> None:
            assert self.lean is not None
            self._queue.put(Inbound(topic, payload, mid, qos, self.lean.connection))

        return LeanClient(s.host, s.port, s.effective_client_id, keepalive_s=s.keepalive_s,
                          session_expiry_s=s.session_expiry_s,
                          receive_maximum=s.receive_maximum,
                          subscriptions=self._subscriptions(), on_message=on_message,
                          on_connect=on_connect, on_subscribe=on_subscribe,
                          on_disconnect=on_disconnect, tls=tls)

    def _connected(self, session_present: object) -> None:
        with self._gen_lock:
            self._generation += 1
        self.metrics.connected = True
        log.info("ingest connected to %s:%d as %s (session present: %s)", self.settings.host,
                 self.settings.port, self.settings.effective_client_id, session_present)

    def _on_connect(self, client: paho.Client, _userdata: object, flags: Any,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            log.error("broker %s:%d refused ingest: %s", self.settings.host, self.settings.port,
                      reason)
            return
        self._connected(getattr(flags, "session_present", "?"))
        client.subscribe([(f, SubscribeOptions(qos=options & 3, retainHandling=options >> 4))
                          for f, options in self._subscriptions()])

    def _on_subscribe(self, _client: paho.Client, _userdata: object, _mid: int,
                      reasons: list[ReasonCode], _props: Properties | None) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("broker refused ingest's subscription: %s", ", ".join(failed))
            return
        log.info("ingest subscribed (share group %r)", self.settings.share_group)
        self._subscribed.set()

    def _on_disconnect(self, _client: paho.Client, _userdata: object, _flags: Any,
                       reason: ReasonCode, _props: Properties | None) -> None:
        self.metrics.connected = False
        self._subscribed.clear()
        if not self._stop.is_set():
            log.warning("ingest lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: paho.Client, _userdata: object,
                    msg: paho.MQTTMessage) -> None:
        # Only queue: everything else happens in the writer thread.
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<invalid UTF-8>"
        self._queue.put(Inbound(topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))

    # -- the writer (our thread) --------------------------------------------------------------
    def _next_batch(self) -> list[Inbound]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait_s
        while len(batch) < self.settings.batch_max:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get_nowait() if left <= 0 else
                             self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            batch = self._next_batch()
            if not batch:
                continue
            self.metrics.queue_depth = self._queue.qsize() + len(batch)
            self._commit_and_ack(batch)

    def _commit_and_ack(self, batch: list[Inbound]) -> None:
        delay = self._backoff[0]
        while True:
            try:
                result = self.process(batch)
                break
            except Exception as exc:  # the sink or the database is down: keep the batch
                if self._stop.is_set():
                    log.warning("ingest stopping with %d messages unwritten; the broker "
                                "redelivers them", len(batch))
                    return
                log.warning("ingest batch of %d not durable (%s); retrying in %.1fs",
                            len(batch), exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
        acked = 0
        if self.lean is not None:
            # One write for the batch; messages of an older connection are left to their
            # redelivered copies.
            connection = self.lean.connection
            mids = [m.mid for m in batch if m.generation == connection and m.qos > 0]
            if self.lean.ack_many(mids, connection):
                acked = len(mids)
        else:
            current = self._generation
            for message in batch:
                if message.generation == current and message.qos > 0:
                    self.client.ack(message.mid, message.qos)
                    acked += 1
        newest = getattr(result, "newest_ts", None)
        age = time.time() - newest.timestamp() if newest is not None else None
        self.metrics.acknowledged(acked, time.monotonic() - batch[0].received_at, age)

    # -- lifecycle ----------------------------------------------------------------------------
    def _connect(self) -> None:
        if self.lean is not None:
            self.lean.start()
            return
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive_s, clean_start=False,
                                  properties=props)
        self.client.loop_start()

    def start(self) -> None:
        """Connect (retrying in the background) and start the writer thread."""
        self._stop.clear()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer",
                                        daemon=True)
        self._writer.start()
        self._connect()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish (commit and acknowledge) what was received, then leave; the session stays at
        the broker, so what arrives meanwhile waits for the next start."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join(timeout)
        if self.lean is not None:
            self.lean.stop()
        else:
            self.client.disconnect()
            self.client.loop_stop()
        self.metrics.connected = False

    def run(self, stop: threading.Event) -> None:
        """Blocking: run until ``stop`` is set (the standalone ``edgefleet fleet ingest``)."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
