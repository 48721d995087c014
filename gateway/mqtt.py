"""The gateway's MQTT 5 session: publishing from the outbox with QoS 1, PUBACK reason codes, the
Last Will and the retained status, the command subscription, reconnects with jittered back-off.

It owns one broker connection at a time and nothing else: producers only ever write to the
outbox, and `MqttSession.pump()` drains it. A message leaves the outbox only when the broker
answered its PUBACK with a reason code below 0x80; a code at or above 0x80 (135, "Not
authorized", when the ACL denies the topic) moves it to the dead-letter table, counted.

Where the PUBACK reason codes come from: gateway/_aiomqtt_shim.py, the one module that touches
aiomqtt's private API. What a code means and how many publishes may be in flight (the broker's
Receive Maximum, shared by outbox messages, command acks and the status): gateway/pubwindow.py,
pure. Command acks are outbox rows (kind ``ack``), stored durably before they are sent, so a
restart never loses one.

Commands are never re-run from a retained message: the subscription asks the broker not to send
retained messages (MQTT 5 Retain Handling 2), and a message that still arrives flagged retained
is refused, so a reconnect does not execute an old command a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import sqlite3
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from contracts.mqtt import ack_topic, command_filter, status_topic
from gateway._aiomqtt_shim import PubackClient, reason_name
from gateway.outbox import Message, OutboxError
from gateway.pubwindow import PubackWindow, Settled, Verdict

__all__ = [
    "Backoff",
    "Command",
    "LatencyWindow",
    "MqttSession",
    "MqttStats",
    "OutboxLike",
    "StoredLike",
    "parse_command",
]

log = logging.getLogger(__name__)

REFUSAL = 0x80  # PUBACK reason codes at or above this are refusals (MQTT 5, 3.4.2.1)


# ---------------------------------------------------------------------------------------------
# What the session needs from the outbox (gateway/outbox.py): structural, so tests can fake it.


class StoredLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...


class OutboxLike(Protocol):
    def peek(self, limit: int, after_id: int = 0) -> Sequence[StoredLike]: ...
    def ack(self, ids: Iterable[int]) -> None: ...
    def dead_letter(self, id: int, reason: str, code: int | None = None) -> None: ...
    def put(self, msg: Message) -> StoredLike: ...


# ---------------------------------------------------------------------------------------------
# Pure pieces: back-off, latency window, counters, command parsing.


class Backoff:
    """Capped exponential back-off with "equal jitter": half the step fixed, half random, so a
    fleet of gateways that lost the same broker does not reconnect in lock-step."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial, self.cap, self.factor, self._rng = initial, cap, factor, rng
        self.attempt = 0

    def next(self) -> float:
        step = min(self.cap, self.initial * self.factor ** self.attempt)
        self.attempt += 1
        return step / 2 + self._rng() * step / 2

    def reset(self) -> None:
        self.attempt = 0


class LatencyWindow:
    """The last `size` publish latencies (seconds), for percentiles in the gateway's status."""

    def __init__(self, size: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self.count += 1

    def extend(self, samples: Iterable[float]) -> None:
        batch = list(samples)
        self._samples.extend(batch)
        self.count += len(batch)

    def percentile(self, p: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class MqttStats:
    connected: bool = False
    published: int = 0
    acked: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # PUBACK reason code -> count
    retried: int = 0  # transient refusals (0x80, 0x91, 0x97), sent again after a back-off
    reconnects: int = 0
    connect_failures: int = 0
    in_flight: int = 0
    commands: int = 0
    commands_rejected: int = 0
    last_error: str | None = None
    latency: LatencyWindow = field(default_factory=LatencyWindow)

    def snapshot(self) -> dict[str, Any]:
        """Plain numbers for the status topic and the Prometheus endpoint."""
        p50, p99 = self.latency.percentile(50), self.latency.percentile(99)
        return {
            "connected": self.connected, "published": self.published, "acked": self.acked,
            "refused": {str(k): v for k, v in sorted(self.refused.items())},
            "retried": self.retried, "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "in_flight": self.in_flight, "commands": self.commands,
            "commands_rejected": self.commands_rejected, "last_error": self.last_error,
            "publish_latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "publish_latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


@dataclass(frozen=True)
class Command:
    """A fleet command from `edgefleet/v1/<gw>/cmd/<device>/<action>` with a JSON object body."""

    id: str
    device: str
    action: str
    body: dict[str, Any]
    topic: str


class CommandRejected(ValueError):
    """A command that cannot be handed on; `command_id` is known when the body carried one."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


def parse_command(gateway_id: str, topic: str, payload: bytes) -> Command:
    """Pure: topic + payload -> Command, or CommandRejected with an operator-readable reason."""
    prefix = command_filter(gateway_id).removesuffix("#")
    command_id: str | None = None
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandRejected(f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CommandRejected(f"command body must be a JSON object, not {type(body).__name__}")
    raw_id = body.get("id")
    if isinstance(raw_id, str) and raw_id:
        command_id = raw_id
    if not topic.startswith(prefix):
        raise CommandRejected(f"not a command topic of {gateway_id}: {topic}", command_id)
    parts = topic[len(prefix):].split("/")
    if len(parts) < 2 or not all(parts):
        raise CommandRejected("command topic must be cmd/<device-id>/<action>", command_id)
    if command_id is None:
        raise CommandRejected('command body needs a non-empty string "id"')
    return Command(command_id, parts[0], "/".join(parts[1:]), body, topic)


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, as ARCHITECTURE.md writes `ts`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# The session


CommandHandler = Callable[[Command], Awaitable[None]]
HealthSource = Callable[[], Mapping[str, Any]]



def outbox_turn(acked: int, waiting: int, capacity: int, paused: bool, ack_batch: int
                ) -> Literal["ack", "read"] | None:
    """What the outbox does while the broker works on a window, one page at most: delete the
    delivered once ``ack_batch`` have gathered (they are durable in the outbox until then and
    re-sent after a crash, never lost); else read ahead while fewer than two windows wait,
    unless a transient refusal's back-off holds the window (it rewinds and reads again)."""
    if acked >= ack_batch:
        return "ack"
    if waiting < 2 * capacity and not paused:
        return "read"
    return None

class MqttSession:
    """One gateway's MQTT 5 session. Build it from plain parameters, then run `pump()`.

    `pump(outbox, stop)` connects, announces the gateway online (retained, with `health()`),
    subscribes to its commands, keeps up to `window` QoS 1 publishes in flight from the outbox,
    and reconnects with back-off until `stop` is set; then it publishes the retained offline
    status and disconnects cleanly. Commands go to `on_command` one at a time, in arrival order;
    the handler answers with `ack()`.
    """

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        gateway_id: str,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 30,
        client_id: str | None = None,
        window: int = 100,
        peek_batch: int = 200,
        ack_batch: int = 100,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        idle_poll: float = 0.05,
        status_interval: float | None = 60.0,
        health: HealthSource | None = None,
        on_command: CommandHandler | None = None,
        retry_backoff: Backoff | None = None,
        max_attempts: int = 10,
        goodbye_s: float = 3.0,
        store: Callable[[Sequence[Message]], object] | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together")
        self.host, self.port, self.gateway_id = host, port, gateway_id
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.username, self._password = username, password
        self.keepalive = keepalive
        self.client_id = client_id or gateway_id
        self.window, self.peek_batch, self.ack_batch = window, peek_batch, ack_batch
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.idle_poll = idle_poll
        self.status_interval = status_interval
        self.health = health
        self.on_command = on_command
        self.stats = MqttStats()

        self.status_topic = status_topic(gateway_id)
        self.ack_topic = ack_topic(gateway_id)
        self.command_filter = command_filter(gateway_id)

        self.retry_backoff = retry_backoff or Backoff(0.1, 10.0)
        self.max_attempts = max_attempts
        #: After stop: how long the session may take to drain, say offline and disconnect;
        #: then the connection is dropped, so stopping never waits on the broker.
        self.goodbye_s = goodbye_s
        #: Where command acks are stored: the gateway passes its Store (gateway/store.py), like
        #: every other write, so a disk that refuses writes holds an ack in memory until it
        #: takes writes again instead of losing it. Without one (tools, benches), the outbox
        #: being pumped.
        self._store = store
        self._client: PubackClient | None = None
        self._connecting: PubackClient | None = None
        self._window: PubackWindow | None = None
        self._slot_freed = asyncio.Event()
        self._outbox: OutboxLike | None = None
        self._wake = asyncio.Event()
        self._commands: asyncio.Queue[Command] = asyncio.Queue()

    def __repr__(self) -> str:  # no password, ever
        return (f"MqttSession({self.host}:{self.port}, gateway={self.gateway_id}, "
                f"tls={self.ca_file is not None}, user={self.username})")

    # -- what producers and handlers call ------------------------------------------------------

    def notify(self) -> None:
        """Producers may call this after writing to the outbox to skip the idle poll."""
        self._wake.set()

    def ack(self, command_id: str | None, ok: bool, error: str | None = None) -> None:
        """Answer a command on `.../ack`. Never blocks on the broker: the ack is stored in the
        outbox (durably, never dropped; through the gateway's Store, held in memory while the
        disk refuses writes) and delivered (QoS 1) like any message."""
        body: dict[str, Any] = {"v": 1, "id": command_id, "ok": ok}
        if error is not None:
            body["error"] = error
        body["ts"] = utc_now()
        message = Message(self.ack_topic, body, "ack")
        if self._store is not None:
            self._store([message])  # never raises for a disk failure: held until it heals
            self.notify()
            return
        if self._outbox is None:
            log.error("command %s: no outbox to store its ack in (the session is not running)",
                      command_id)
            return
        try:
            self._outbox.put(message)
        except (OutboxError, OSError, sqlite3.Error) as exc:
            log.error("command %s: its ack could not be stored: %s", command_id, exc)
            return
        self.notify()

    def status_payload(self, online: bool) -> bytes:
        body: dict[str, Any] = {"v": 1, "online": online, "gateway": self.gateway_id}
        if online:
            body["ts"] = utc_now()
            body["health"] = dict(self.health()) if self.health else {}
        return json.dumps(body, separators=(",", ":"), default=str).encode()

    # -- the connection ------------------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None and self.cert_file is None:
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def _make_client(self) -> PubackClient:
        # A fresh client per connection: no paho state (mids, queued packets) crosses a
        # reconnect; everything unacknowledged is re-sent from the outbox instead. Clean start
        # on purpose: commands sent while the gateway was away are not replayed hours later
        # onto actuators; the fleet sees no ack and decides.
        client = PubackClient(
            self.host, self.port, username=self.username, password=self._password,
            identifier=self.client_id, keepalive=self.keepalive,
            will=aiomqtt.Will(self.status_topic, self.status_payload(online=False), qos=1,
                              retain=True),
            protocol=aiomqtt.ProtocolVersion.V5, tls_context=self._tls_context(),
            max_inflight_messages=self.window, timeout=self.connect_timeout,
        )
        client.pending_calls_threshold = 10 * self.window
        return client

    async def pump(self, outbox: OutboxLike, stop: asyncio.Event) -> None:
        """Run until `stop` is set: connect, publish from the outbox, reconnect on loss."""
        first = True
        self._outbox = outbox
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(self._command_worker(), name="mqtt-commands")
            watch = tg.create_task(self._drop_after_goodbye(stop), name="mqtt-goodbye")
            while not stop.is_set():
                client = self._make_client()
                self._connecting = client
                try:
                    async with client:
                        self._client = client
                        self.stats.connected = True
                        if not first:
                            self.stats.reconnects += 1
                        first = False
                        self.backoff.reset()
                        log.info("MQTT connected to %s:%d as %s (receive maximum %d)",
                                 self.host, self.port, self.client_id, client.receive_maximum)
                        await self._connected(client, outbox, stop)
                        await self._say_goodbye(client)
                except* (aiomqtt.MqttError, OSError) as group:
                    error = _first_leaf(group)
                    self.stats.last_error = f"{type(error).__name__}: {error}"
                    if self.stats.connected:
                        log.warning("MQTT connection to %s:%d lost: %s",
                                    self.host, self.port, error)
                    else:
                        self.stats.connect_failures += 1
                        log.warning("MQTT connect to %s:%d failed: %s", self.host, self.port,
                                    error)
                finally:
                    self._client = self._connecting = None
                    self.stats.connected = False
                    self.stats.in_flight = 0
                if not stop.is_set():
                    delay = self.backoff.next()
                    log.info("MQTT reconnecting in %.2fs", delay)
                    await _wait_any((stop,), delay)
            # Stopping: a command still running (a bus write) is abandoned with the buses.
            worker.cancel()
            watch.cancel()

    async def _drop_after_goodbye(self, stop: asyncio.Event) -> None:
        """``goodbye_s`` after stop, drop a connection still open (or still connecting): a
        broker that does not answer must not hold the gateway's exit (systemd would kill it
        mid-write after its stop timeout)."""
        await stop.wait()
        await asyncio.sleep(self.goodbye_s)
        client = self._client or self._connecting
        if client is not None:
            log.warning("MQTT goodbye took longer than %g s; dropping the connection",
                        self.goodbye_s)
            client.abort()
            client.give_up()
    async def _connected(self, client: PubackClient, outbox: OutboxLike,
                         stop: asyncio.Event) -> None:
        """One connection's life: announce, subscribe, then publish until stop or loss."""
        # Subscribe first: "online" on the status topic then means "listening for commands".
        # Retain Handling 2: a retained command is not sent on (re)subscription, so it is not
        # executed again after every reconnect.
        granted = await client.subscribe(
            self.command_filter, options=SubscribeOptions(qos=1, retainHandling=2))
        for code in granted:
            value = code.value if isinstance(code, ReasonCode) else int(code)
            if value >= REFUSAL:
                log.warning("MQTT broker %s:%d refused the command subscription %s: %s (%d); "
                            "this gateway will receive no commands", self.host, self.port,
                            self.command_filter, reason_name(value, PacketTypes.SUBACK), value)
        window = PubackWindow(self.window, client.receive_maximum, self.retry_backoff.next,
                              on_delivered=self.retry_backoff.reset,
                              max_attempts=self.max_attempts)
        self._window = window
        try:
            await self._publish_status(client, online=True, timeout=self.connect_timeout)
            async with asyncio.TaskGroup() as tg:
                helpers = [tg.create_task(self._read_commands(client), name="mqtt-cmd-reader")]
                if self.status_interval:
                    helpers.append(tg.create_task(
                        self._refresh_status(client, self.status_interval), name="mqtt-status"))
                await self._publish_from(client, outbox, stop, window)
                for task in helpers:
                    task.cancel()
        finally:
            self._window = None

    async def _publish_status(self, client: PubackClient, online: bool,
                              timeout: float) -> None:
        """One retained status publish, inside the connection's Receive Maximum budget."""
        window = self._window
        if window is None:
            raise aiomqtt.MqttError("no connection")
        window.want()
        try:
            while not window.borrow():
                self._slot_freed.clear()
                await asyncio.wait_for(self._slot_freed.wait(), timeout)
        except BaseException:
            window.cancel_want()
            raise
        try:
            code = await _settled(client.publish_tracked(
                self.status_topic, self.status_payload(online), 1, True), timeout)
        finally:
            window.give_back()
            self._slot_freed.set()
        if code >= REFUSAL:
            self.stats.refused[code] = self.stats.refused.get(code, 0) + 1
            log.warning("broker refused the gateway status: %s (%d)", reason_name(code), code)

    async def _say_goodbye(self, client: PubackClient) -> None:
        """A clean DISCONNECT discards the Will, so say offline ourselves (retained).

        It runs after the outbox window has drained, so it is the only publish in flight,
        unless the drain gave up waiting for PUBACKs (the broker is not answering then)."""
        self._window = PubackWindow(1, client.receive_maximum, lambda: 0.0)
        try:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await self._publish_status(client, online=False, timeout=2.0)
        finally:
            self._window = None

    # -- publishing ----------------------------------------------------------------------------

    async def _publish_from(self, client: PubackClient, outbox: OutboxLike,
                            stop: asyncio.Event, window: PubackWindow) -> None:
        """Keep the window full from the outbox, oldest first; settle PUBACKs in order.

        Each connection starts again from the oldest unacknowledged message, so a message that
        was in flight when the link dropped is sent again (a duplicate at worst, never a gap).
        The window decides what each PUBACK means (gateway/pubwindow.py); this loop does the I/O.

        The outbox's own work (reading the next page, deleting what was delivered) is done
        right after a refill has gone out, while the broker works on it, and in pages small
        enough to end before its PUBACKs are back: done before the refill, every page read and
        every delete stalled the whole window (Mosquitto's Receive Maximum is 20 publishes, a
        round trip on loopback a fraction of a millisecond; a 1,000-row read takes 1-4 ms).
        """
        inflight: deque[tuple[StoredLike, asyncio.Future[int], float]] = deque()
        waiting: deque[StoredLike] = deque()
        after_id = 0
        acked: list[int] = []
        stats = self.stats
        publish_many = client.publish_many
        peek_batch, ack_batch = self.peek_batch, self.ack_batch
        try:
            while True:
                rewind = window.rewind(time.monotonic())
                if rewind is not None:  # a transient refusal's back-off is over: read again
                    self._ack(outbox, acked)
                    waiting.clear()
                    after_id = rewind
                room = window.room() if not stop.is_set() else 0
                if room > 0:
                    if len(waiting) < room:  # not enough read ahead: read now, then send
                        batch = outbox.peek(peek_batch, after_id)
                        if batch:
                            waiting.extend(batch)
                            after_id = batch[-1].id
                    sending = [waiting.popleft() for _ in range(min(room, len(waiting)))]
                    if sending:
                        futures = publish_many([(m.topic, m.payload, m.qos, m.retain)
                                                for m in sending])
                        window.sent_many([m.id for m in sending])
                        sent_at = time.perf_counter()
                        inflight.extend(zip(sending, futures, itertools.repeat(sent_at)))
                        stats.published += len(sending)
                stats.in_flight = window.in_flight
                if not inflight:
                    self._ack(outbox, acked)
                    if stop.is_set():
                        return
                    self._wake.clear()
                    pause = window.resume_in(time.monotonic())
                    await _wait_any((stop, self._wake),
                                    self.idle_poll if pause is None else pause)
                    continue
                # The broker has work: the outbox's turn, one page at most (see above).
                turn = outbox_turn(len(acked), len(waiting), window.capacity, window.paused,
                                   ack_batch)
                if turn == "ack":
                    self._ack(outbox, acked)
                elif turn == "read":
                    batch = outbox.peek(peek_batch, after_id)
                    if batch:
                        waiting.extend(batch)
                        after_id = batch[-1].id
                head = inflight[0][1]
                if not head.done():
                    if stop.is_set():  # draining: bounded, the rest stays in the outbox
                        try:
                            await asyncio.wait_for(asyncio.shield(head), self.goodbye_s)
                        except TimeoutError:
                            log.warning("stopping with %d publishes unacknowledged; they stay "
                                        "in the outbox", len(inflight))
                            return
                    else:
                        await head
                now = time.perf_counter()
                done: list[tuple[StoredLike, int, float]] = []
                while inflight and inflight[0][1].done():
                    msg, fut, sent = inflight.popleft()
                    done.append((msg, fut.result(), sent))
                delivered, others = window.pubacks([(m.id, code) for m, code, _ in done],
                                                   time.monotonic())
                acked += delivered
                stats.latency.extend(now - sent for _, code, sent in done if code < REFUSAL)
                if others:  # refusals: rare. The window settles exactly what it was given,
                    by_id = {m.id: m for m, _, _ in done}  # as the deque pops in send order
                    for settled in others:
                        self._settle(outbox, by_id[settled.id], settled)
                self._slot_freed.set()
        finally:
            self._ack(outbox, acked)  # every PUBACK received is recorded, even on the way out
            for _, fut, _ in inflight:  # abandoned: mark their errors as seen
                if fut.done() and not fut.cancelled():
                    fut.exception()
            stats.in_flight = 0

    def _settle(self, outbox: OutboxLike, msg: StoredLike, settled: Settled) -> None:
        """A PUBACK that was not a delivery: a retry later, or a dead letter now."""
        stats = self.stats
        code = settled.code
        name = reason_name(code)
        if settled.verdict is Verdict.RETRY:
            stats.retried += 1
            log.warning("broker answered %s (%#04x) for outbox id %d on %s (attempt %d of %d); "
                        "sending it again after a back-off", name, code, msg.id, msg.topic,
                        settled.attempts, self.max_attempts)
            return
        reason = name if settled.attempts == 0 else (
            f"{name}, still after {settled.attempts} attempts")
        outbox.dead_letter(msg.id, reason, code)
        stats.refused[code] = stats.refused.get(code, 0) + 1
        log.debug("broker refused outbox id %d on %s: %s (%d)", msg.id, msg.topic, reason,
                  code)  # the outbox logs the dead letter with device and seq

    def _ack(self, outbox: OutboxLike, acked: list[int]) -> None:
        if acked:
            outbox.ack(acked)
            self.stats.acked += len(acked)
            acked.clear()

    async def _refresh_status(self, client: PubackClient, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._publish_status(client, online=True, timeout=self.connect_timeout)

    # -- commands ------------------------------------------------------------------------------

    async def _read_commands(self, client: PubackClient) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.retain:  # Retain Handling 2 should prevent it; never run one twice
                self.stats.commands_rejected += 1
                log.warning("ignored a retained command on %s: commands are not retained",
                            message.topic.value)
                continue
            try:
                command = parse_command(self.gateway_id, message.topic.value, payload)
            except CommandRejected as exc:
                self.stats.commands_rejected += 1
                log.warning("rejected command on %s: %s", message.topic.value, exc)
                self.ack(exc.command_id, False, str(exc))
                continue
            self.stats.commands += 1
            log.info("command %s for %s: %s", command.id, command.device, command.action)
            self._commands.put_nowait(command)

    async def _command_worker(self) -> None:
        """Handlers run one at a time, in arrival order, and outlive a reconnect: an actuation
        that is half done is not cancelled because the broker blinked."""
        while True:
            command = await self._commands.get()
            if self.on_command is None:
                self.ack(command.id, False, "this gateway has no command handler")
                continue
            try:
                await self.on_command(command)
            except Exception as exc:
                log.exception("command %s (%s) failed", command.id, command.action)
                self.ack(command.id, False, f"{type(exc).__name__}: {exc}")


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _settled(fut: asyncio.Future[int], timeout: float) -> int:
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise aiomqtt.MqttError(f"no PUBACK within {timeout:g}s") from None


async def _wait_any(events: Sequence[asyncio.Event], timeout: float) -> None:
    """Return when any event is set or after `timeout` seconds."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
