"""The poller of one bus: owns its link, runs the schedule, and survives everything a bus does.

One :class:`BusPoller` owns one :class:`~gateway.bus.ModbusBus` (an RS-485 port or a Modbus TCP
link; one transaction at a time). What to read next is the pure schedule in
:mod:`gateway.schedule` (priorities, aging, back-off, offline after ``OFFLINE_AFTER``); this
module does the I/O around it:

- **Urgent work first**: rule actions and fleet commands (:meth:`BusPoller.submit`) go before
  any routine poll.
- **Background work last**: a firmware transfer's transactions (:meth:`BusPoller.background`)
  run one at a time, only when no poll is due, so the poll schedule (fire detectors first) keeps
  the bus; a transfer costs a due poll at most one transaction's wait.
- **Status reads take the fast path** (see :meth:`BusPoller._read`).
- **A fire detector in pre-alarm is hot**: its status word (warning bit, no alarm bit) makes
  the schedule read it every ``HOT_STATUS_S`` ahead of the rest (:mod:`gateway.schedule`).
- **Edge rules before storage.** After a poll the decoded values go to the rules hook first and
  only then to the sink (the outbox), so the siren never waits for (or depends on) the disk.
- **Noise costs a retry, not a detector.** A garbled reply (:class:`~gateway.bus.Garbled`) or
  a silent online node is polled again at once, once (a block read after a changed status word
  up to ``CHANGE_ATTEMPTS`` times); a garbled reply never counts toward offline; the first try
  of every read waits only a few times the node's usual reply time (plus the wire time of a
  longer answer), the retry the full timeout (the rules are the schedule's,
  :mod:`gateway.schedule`).
- **Telemetry reads the class block alone** once the node is known online (registers 16..):
  the status block is the status reads' business, and a short read is garbled less often.
- **One device's failure is that device's.** No answer, a Modbus exception, a reply that does not
  answer the request (:class:`~gateway.bus.BadReply`) or registers that do not decode are
  counted for that device and logged at most once a minute; they never leave this loop.
- **The link is supervised.** A port that cannot be opened or vanishes (a USB adapter pulled)
  marks this bus' devices offline, fails its queued writes, and is re-opened every
  ``reconnect_s``; the other buses never notice.
- **Stopping is prompt**: every wait also wakes on the stop event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.bus import BadReply, Garbled, ModbusBus, ModbusError, NoResponse, PortLost
from gateway.decode import (
    ALARM_WORD_COUNT,
    ALARM_WORD_START,
    COMMON_INPUTS,
    DeviceDecoder,
    now,
)
from gateway.outbox import Message
from gateway.schedule import OFFLINE_AFTER, Job, ReplyTimer, Schedule, Timing, short_try
from hardware.regmap import load_maps

__all__ = ["ALARM_WORD_EVERY", "OFFLINE_AFTER", "BusPoller", "DevicePoll"]

log = logging.getLogger(__name__)

ALARM_WORD_EVERY = 8  # status polls between reads of the whole alarm word (see _read)
LOG_EVERY_S = 60.0  # a device's repeated protocol faults are logged at most this often
#: Polls in a row after which one waiting background transaction runs even with polls due:
#: on a saturated bus a firmware transfer still moves (slowly), and polling keeps at least
#: BACKGROUND_EVERY / (BACKGROUND_EVERY + 1) of the transactions.
BACKGROUND_EVERY = 8
RECONNECT_S = 2.0  # a lost port is re-opened this often (replug → polling within ~2 s)

Sink = Callable[[list[Message]], None]
UpdateHook = Callable[[DeviceDecoder], Awaitable[None]]


@dataclass
class DevicePoll:
    decoder: DeviceDecoder
    timing: Timing
    timeout_s: float | None = None  # the reply timeout for this device; None: the bus default
    fast_polls: int = 0
    polls: int = 0
    timeouts: int = 0
    exceptions: int = 0
    bad_replies: int = 0
    garbled: int = 0  # replies that arrived without a valid frame (CRC errors, noise)
    retries: int = 0  # polls tried again at once after a garbled reply or silence
    last_ok: float = 0.0
    replies: ReplyTimer = field(default_factory=ReplyTimer)  # status reads' reply times
    probes: int = 0  # polls while never heard (see ReplyTimer.first_try_s)
    _logged_at: float = -LOG_EVERY_S
    _unlogged: int = 0

    @property
    def id(self) -> str:
        return self.decoder.info.id

    @property
    def address(self) -> int:
        return self.decoder.info.address

    @property
    def failures(self) -> int:
        return self.timing.failures


@dataclass
class _Attempt:
    """One poll's tries: which one this is, and whether the status word showed a change."""

    number: int = 0
    changed: bool = False
    bad_retried: bool = False  # a bad reply was retried already in this poll
    class_only: bool = False  # a telemetry read of the class block alone (node known online)


@dataclass
class Urgent:
    """A write that must happen before any routine poll (rule action, fleet command)."""

    run: Callable[[ModbusBus], Awaitable[Any]]
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())


class BusPoller:
    def __init__(self, name: str, bus: ModbusBus, devices: list[DevicePoll], sink: Sink,
                 on_update: UpdateHook | None = None, reconnect_s: float = RECONNECT_S):
        self.name = name
        self.bus = bus
        self.devices = {d.id: d for d in devices}
        self.sink = sink
        self.on_update = on_update
        self.reconnect_s = reconnect_s
        self.link_up = False
        self.link_losses = 0
        self._urgent: asyncio.Queue[Urgent] = asyncio.Queue()
        self._background: collections.deque[Urgent] = collections.deque()
        bits = {b.name: 1 << b.bit for b in load_maps().status_bits}
        self._warning, self._alarm = bits["warning"], bits["alarm"]
        self._wake = asyncio.Event()
        self._rng = random.Random()

    @property
    def rtu(self) -> ModbusBus:  # the name callers used before Modbus TCP
        return self.bus

    # -- what others call -----------------------------------------------------------------
    async def submit(self, job: Callable[[ModbusBus], Awaitable[Any]]) -> Any:
        """Run job(bus) ahead of routine polling; returns its result or raises its error."""
        if not self.link_up:
            raise PortLost(self.bus.describe(), f"bus {self.name} is down")
        urgent = Urgent(job)
        self._urgent.put_nowait(urgent)
        self._wake.set()
        return await urgent.done

    async def background(self, job: Callable[[ModbusBus], Awaitable[Any]]) -> Any:
        """Run job(bus) when no poll is due, or after ``BACKGROUND_EVERY`` polls in a row (a
        firmware transfer's chunk); returns its result or raises its error. One job per call:
        a long task submits one transaction at a time, so the schedule runs between them, and
        a saturated bus delays it but never starves it."""
        if not self.link_up:
            raise PortLost(self.bus.describe(), f"bus {self.name} is down")
        work = Urgent(job)
        self._background.append(work)
        self._wake.set()
        try:
            return await work.done
        finally:
            if not work.done.done():  # the caller was cancelled: never run it later
                with contextlib.suppress(ValueError):
                    self._background.remove(work)

    def repoll(self, device_id: str) -> None:
        self.devices[device_id].timing.repoll()
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "link": "up" if self.link_up else "down",
            "link_losses": self.link_losses,
            "transactions": self.bus.transactions,
            "failures": self.bus.failures,
            "devices": {d.id: {"online": bool(d.decoder.online), "polls": d.polls,
                               "timeouts": d.timeouts, "exceptions": d.exceptions,
                               "bad_replies": d.bad_replies, "garbled": d.garbled,
                               "retries": d.retries,
                               "failures_in_a_row": d.failures}
                        for d in self.devices.values()},
        }

    # -- supervision ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        waker = asyncio.get_running_loop().create_task(self._wake_on(stop))
        try:
            while not stop.is_set():
                try:
                    await self.bus.connect()
                except PortLost as exc:
                    self._link_down(str(exc))
                    await self._sleep(stop, self.reconnect_s)
                    continue
                if self.link_losses:
                    log.warning("bus %s: %s is back", self.name, self.bus.describe())
                self.link_up = True
                try:
                    await self._poll_loop(stop)
                except PortLost as exc:
                    self._link_down(str(exc))
                    self.bus.close()
                    await self._sleep(stop, self.reconnect_s)
                except Exception as exc:  # a bug or an error nobody foresaw: this bus only
                    log.exception("bus %s: unexpected error; re-opening the bus", self.name)
                    self._link_down(f"unexpected error: {exc!r}")
                    self.bus.close()
                    await self._sleep(stop, self.reconnect_s)
        finally:
            waker.cancel()
            self.link_up = False
            self._fail_urgent(PortLost(self.bus.describe(), "the gateway is stopping"))
            self.bus.close()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait up to ``seconds``; returns early on stop, a submitted write or a repoll."""
        if stop.is_set():
            return
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _link_down(self, reason: str) -> None:
        if self.link_up or not self.link_losses:
            log.error("bus %s: %s; its devices are offline, re-opening every %g s",
                      self.name, reason, self.reconnect_s)
            self.link_losses += 1
        self.link_up = False
        self._fail_urgent(PortLost(self.bus.describe(), reason))
        for dev in self.devices.values():
            if dev.timing.link_down():
                self._sink(dev.decoder.offline(now(), reason))

    def _fail_urgent(self, exc: Exception) -> None:
        while not self._urgent.empty():
            urgent = self._urgent.get_nowait()
            if not urgent.done.done():
                urgent.done.set_exception(exc)
        while self._background:
            work = self._background.popleft()
            if not work.done.done():
                work.done.set_exception(exc)

    # -- the loop -------------------------------------------------------------------------
    async def _poll_loop(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        for i, dev in enumerate(self.devices.values()):
            # spread the first polls so a bus of 32 nodes does not start with a burst
            dev.timing.status_due = start + i * 0.01
            dev.timing.telemetry_due = start + 0.5 + i * 0.05
        schedule = Schedule({d.id: d.timing for d in self.devices.values()})
        polls_in_a_row = 0  # since the last background transaction
        while not stop.is_set():
            while not self._urgent.empty():
                await self._run_urgent(self._urgent.get_nowait())
            if self._background and polls_in_a_row >= BACKGROUND_EVERY:
                polls_in_a_row = 0  # its bounded share on a busy bus
                await self._run_urgent(self._background.popleft())
                continue
            job = schedule.next(time.monotonic())
            if isinstance(job, Job):
                await self._poll(self.devices[str(job.device)], job.kind)
                polls_in_a_row += 1
            elif self._background:  # nothing due: one background transaction
                polls_in_a_row = 0
                await self._run_urgent(self._background.popleft())
            elif job is None:  # a bus with no devices still serves urgent writes
                await self._sleep(stop, 1.0)
            else:
                await self._sleep(stop, job)

    async def _run_urgent(self, urgent: Urgent) -> None:
        if urgent.done.done():  # its submitter was cancelled: nobody wants it any more
            return
        try:
            result = await urgent.run(self.bus)
            if not urgent.done.done():  # cancelled meanwhile: the result has no taker
                urgent.done.set_result(result)
        except PortLost as exc:
            if not urgent.done.done():
                urgent.done.set_exception(exc)
            raise
        except Exception as exc:  # handed to the submitter, who reports it
            if not urgent.done.done():
                urgent.done.set_exception(exc)

    def _bus_learned_s(self) -> float | None:
        """The longest first-try timeout learned on this bus (for a node never heard)."""
        learned = [t for d in self.devices.values() if (t := d.replies.learned_s) is not None]
        return max(learned) if learned else None

    def _try_s(self, dev: DevicePoll, full: float, registers: int, attempt: _Attempt) -> float:
        """The reply timeout of this try of a read of ``registers``: ``full``, or when the try
        is a short one (:func:`~gateway.schedule.short_try`: a first try, an alarm edge's block
        read) a few times the node's usual status-word reply
        (:class:`~gateway.schedule.ReplyTimer`) plus the wire time of the longer answer."""
        if not short_try(attempt.number, attempt.changed):
            return full
        return dev.replies.first_try_s(full, self._bus_learned_s(), dev.probes,
                                       self._longer_s(registers))

    def _longer_s(self, registers: int) -> float:
        """Wire time of the answer to a read of ``registers`` beyond a one-register answer."""
        return 2 * (registers - 1) * self.bus.char_s

    async def _read(self, dev: DevicePoll, kind: str, attempt: _Attempt) -> list[int] | None:
        """The words to decode, from register 0 (from the class block's first register when
        ``attempt.class_only``); None when nothing changed (alarm word). Sets
        ``attempt.changed`` when the status word showed a change: the block read that follows
        is an alarm edge in progress, and a retry goes straight to it.

        Every read's first try waits only a few usual replies long (a request garbled on its
        way is never answered, and on a noisy riser that is one request in thirteen); its
        retry waits the full timeout, so a slow answer costs a retry, never an offline report."""
        full = dev.timeout_s or self.bus.timeout
        if attempt.number == 0 and kind == "status" and dev.replies.answered == 0:
            dev.probes += 1
        if attempt.class_only:
            start, count = dev.decoder.class_block
            timeout = self._try_s(dev, full, count, attempt)
            return await self.bus.read_input(dev.address, start, count, timeout)
        if kind == "status" and dev.decoder.online and not attempt.changed:
            # The fast path. A 16-register status block costs 30 ms of a 19200-baud bus, so a
            # riser of 32 detectors would be read once a second. Instead read the status word
            # alone (register 5: alarm, fault, warning, latched bits; 12.6 ms), and every
            # ALARM_WORD_EVERY-th time the alarm word (registers 5-9, adding uptime and the
            # alarm and fault bits, 17 ms), which also catches a second alarm type, a new
            # fault and a reboot. Only when they changed is the whole status block read
            # (alarm ids need the node's boot count and alarm sequence).
            dev.fast_polls += 1
            count = 1 if dev.fast_polls % ALARM_WORD_EVERY else ALARM_WORD_COUNT
            timeout = self._try_s(dev, full, count, attempt)
            t = time.monotonic()
            words = await self.bus.read_input(dev.address, ALARM_WORD_START, count, timeout)
            dev.replies.observe(max(0.0, time.monotonic() - t - self._longer_s(count)))
            if count == 1:
                if words[0] == int(dev.decoder.values.get("status", -1)):
                    return None
            elif not dev.decoder.alarm_word_changed(words):
                return None
            attempt.changed = True  # the block read below is this try's second transaction
        count = COMMON_INPUTS if kind == "status" else dev.decoder.cmap.input_count
        timeout = self._try_s(dev, full, count, attempt)
        return await self.bus.read_input(dev.address, 0, count, timeout)

    async def _poll(self, dev: DevicePoll, kind: str) -> None:
        t = time.monotonic()
        # Telemetry of a node known online reads the class block alone: the status block is
        # the status reads' (16 registers fewer: 30 % of the bytes of a fire detector's read,
        # and a third as likely to be garbled on a noisy line).
        class_only = kind == "telemetry" and bool(dev.decoder.online)
        dev.timing.started("status" if kind == "status" else "telemetry", t,
                           covers_status=not class_only)
        dev.polls += 1
        attempt = _Attempt(class_only=class_only)
        heard = False  # a garbled reply in this poll: the node is alive, whatever follows
        while True:
            try:
                words = await self._read(dev, kind, attempt)
                break
            except NoResponse as exc:
                garbled = isinstance(exc, Garbled)
                if garbled:
                    dev.garbled += 1
                else:
                    dev.timeouts += 1
                heard = heard or garbled
                if dev.timing.retry_now(heard, attempt.number, attempt.changed):
                    attempt.number += 1
                    dev.retries += 1
                    continue
                if heard:
                    dev.timing.garbled()
                    self._log_fault(dev, logging.WARNING,
                                    f"garbled reply (line noise?), retried once: {exc}")
                else:
                    self._failed(dev, str(exc))
                return
            except ModbusError as exc:
                dev.exceptions += 1
                self._log_fault(dev, logging.WARNING, str(exc))
                return
            except BadReply as exc:
                if not attempt.bad_retried:
                    # A late answer to an earlier request of ours (one we stopped waiting for:
                    # a short first try, a host stalled past a timeout) looks just like this:
                    # the node's own answer, late, not its fault. Read once more at once; a
                    # second bad reply in the poll is a protocol fault.
                    attempt.bad_retried = True
                    dev.garbled += 1
                    dev.retries += 1
                    attempt.number += 1
                    continue
                self._protocol_fault(dev, str(exc))
                return
        if words is None:  # alarm word unchanged: the node is alive and nothing happened
            self._answered(dev, t)
            return
        ts = now()
        try:
            if attempt.class_only:
                messages = [dev.decoder.class_telemetry(words, ts)]
            else:
                messages = dev.decoder.update(words, ts)
                if kind == "telemetry":
                    messages.append(dev.decoder.telemetry(words, ts))
        except ValueError as exc:  # the node is not what the config says
            self._log_fault(dev, logging.ERROR, str(exc))
            self._failed(dev, str(exc), quiet=True)
            return
        except (KeyError, IndexError, struct.error) as exc:
            self._protocol_fault(dev, f"{len(words)} registers did not decode: {exc!r}")
            return
        self._answered(dev, t)
        # local safety first: the rules see the new values before anything touches the disk
        if self.on_update is not None:
            await self.on_update(dev.decoder)
        if messages:
            self._sink(messages)

    def _sink(self, messages: list[Message]) -> None:
        try:
            self.sink(messages)
        except Exception:  # the sink counts and reports its own failures; never stop polling
            log.exception("bus %s: storing %d message(s) failed", self.name, len(messages))

    def _protocol_fault(self, dev: DevicePoll, reason: str) -> None:
        dev.bad_replies += 1
        self._log_fault(dev, logging.WARNING, f"protocol fault: {reason}")
        self._failed(dev, f"protocol fault: {reason}", quiet=True)

    def _log_fault(self, dev: DevicePoll, level: int, reason: str) -> None:
        t = time.monotonic()
        if t - dev._logged_at < LOG_EVERY_S:
            dev._unlogged += 1
            return
        more = f" ({dev._unlogged} more since the last report)" if dev._unlogged else ""
        log.log(level, "bus %s: %s (address %d): %s%s", self.name, dev.id, dev.address,
                reason, more)
        dev._logged_at, dev._unlogged = t, 0

    def _answered(self, dev: DevicePoll, t: float) -> None:
        if dev.timing.fire:  # in pre-alarm and not in alarm yet: watch it closely
            status = int(dev.decoder.values.get("status", 0))
            dev.timing.hot = bool(status & self._warning) and not status & self._alarm
        ended = dev.timing.answered()
        if ended:
            log.info("bus %s: %s answers again after %d failed polls", self.name, dev.id, ended)
        dev.last_ok = t

    def _failed(self, dev: DevicePoll, reason: str, quiet: bool = False) -> None:
        if dev.timing.failed(time.monotonic(), self._rng.uniform(0.8, 1.2)):
            if not quiet:
                log.warning("bus %s: %s (address %d) offline: %s", self.name, dev.id,
                            dev.address, reason)
            self._sink(dev.decoder.offline(now(), reason))
