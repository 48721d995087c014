"""The poll scheduler of one bus: what to read next, from whom, and what to do when nobody answers.

One :class:`BusPoller` owns one :class:`~gateway.rtu.RtuBus` (one transaction at a time). Each
device has two jobs: the status block (identity, health, alarm and fault bits: input registers
0-15), polled fastest for fire detectors, and the full map (telemetry), polled slower. When
several jobs are due, urgent work goes first (rule actions, fleet commands), then status blocks
(fire before the rest), then telemetry. A device that stops answering backs off exponentially
(with jitter) up to its ``max_backoff_s``, so a dead or flapping node never starves the others;
after ``OFFLINE_AFTER`` failures in a row it is reported offline, once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.decode import (
    ALARM_WORD_COUNT,
    ALARM_WORD_START,
    COMMON_INPUTS,
    DeviceDecoder,
    now,
)
from gateway.outbox import Message
from gateway.rtu import ModbusError, NoResponse, RtuBus

log = logging.getLogger(__name__)

OFFLINE_AFTER = 3  # consecutive failed polls before a node is declared offline
ALARM_WORD_EVERY = 8  # status polls between reads of the whole alarm word (see _read)
PRIORITY_URGENT, PRIORITY_FIRE, PRIORITY_STATUS, PRIORITY_TELEMETRY = 0, 1, 2, 3

Sink = Callable[[list[Message]], None]
UpdateHook = Callable[[DeviceDecoder], Awaitable[None]]


@dataclass
class DevicePoll:
    decoder: DeviceDecoder
    status_s: float
    telemetry_s: float
    max_backoff_s: float
    status_due: float = 0.0
    telemetry_due: float = 0.0
    failures: int = 0
    fast_polls: int = 0
    polls: int = 0
    timeouts: int = 0
    exceptions: int = 0
    last_ok: float = 0.0

    @property
    def id(self) -> str:
        return self.decoder.info.id

    @property
    def address(self) -> int:
        return self.decoder.info.address


@dataclass
class Urgent:
    """A write that must happen before any routine poll (rule action, fleet command)."""

    run: Callable[[RtuBus], Awaitable[Any]]
    done: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())


class BusPoller:
    def __init__(self, name: str, rtu: RtuBus, devices: list[DevicePoll], sink: Sink,
                 on_update: UpdateHook | None = None):
        self.name = name
        self.rtu = rtu
        self.devices = {d.id: d for d in devices}
        self.sink = sink
        self.on_update = on_update
        self._urgent: asyncio.Queue[Urgent] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._rng = random.Random()

    # -- what others call -----------------------------------------------------------------
    async def submit(self, job: Callable[[RtuBus], Awaitable[Any]]) -> Any:
        """Run job(rtu) ahead of routine polling; returns its result or raises its error."""
        urgent = Urgent(job)
        self._urgent.put_nowait(urgent)
        self._wake.set()
        return await urgent.done

    def repoll(self, device_id: str) -> None:
        dev = self.devices[device_id]
        dev.status_due = dev.telemetry_due = 0.0
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "transactions": self.rtu.transactions,
            "failures": self.rtu.failures,
            "devices": {d.id: {"online": d.decoder.online, "polls": d.polls,
                               "timeouts": d.timeouts, "exceptions": d.exceptions,
                               "failures_in_a_row": d.failures}
                        for d in self.devices.values()},
        }

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        for i, dev in enumerate(self.devices.values()):
            # spread the first polls so a bus of 32 nodes does not start with a burst
            dev.status_due = start + i * 0.01
            dev.telemetry_due = start + 0.5 + i * 0.05
        while not stop.is_set():
            while not self._urgent.empty():
                await self._run_urgent(self._urgent.get_nowait())
            job = self._next_job()
            if job is None:  # a bus with no devices still serves urgent writes
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                continue
            wait, dev, kind = job
            if wait > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
                continue
            await self._poll(dev, kind)

    def _next_job(self) -> tuple[float, DevicePoll, str] | None:
        if not self.devices:
            return None
        t = time.monotonic()
        best: tuple[int, float, DevicePoll, str] | None = None
        soonest = float("inf")
        for dev in self.devices.values():
            for kind, due in (("status", dev.status_due), ("telemetry", dev.telemetry_due)):
                if due > t:
                    soonest = min(soonest, due)
                    continue
                period = dev.telemetry_s if kind == "telemetry" else dev.status_s
                if t - due > period:
                    prio = PRIORITY_FIRE  # overdue by a whole period: nobody starves
                elif kind == "telemetry":
                    prio = PRIORITY_TELEMETRY
                elif dev.decoder.info.cls == "fire":
                    prio = PRIORITY_FIRE
                else:
                    prio = PRIORITY_STATUS
                if best is None or (prio, due) < (best[0], best[1]):
                    best = (prio, due, dev, kind)
        if best is not None:
            return 0.0, best[2], best[3]
        first = next(iter(self.devices.values()))
        return soonest - t, first, "wait"

    async def _run_urgent(self, urgent: Urgent) -> None:
        try:
            urgent.done.set_result(await urgent.run(self.rtu))
        except Exception as exc:  # handed to the submitter, who reports it
            if not urgent.done.done():
                urgent.done.set_exception(exc)

    async def _read(self, dev: DevicePoll, kind: str) -> list[int] | None:
        """The words to decode, from register 0; None when nothing changed (alarm word)."""
        if kind == "status" and dev.decoder.online:
            # The fast path. A 16-register status block costs 30 ms of a 19200-baud bus, so a
            # riser of 32 detectors would be read once a second. Instead read the status word
            # alone (register 5: alarm, fault, warning, latched bits; 12.6 ms), and every
            # ALARM_WORD_EVERY-th time the alarm word (registers 5-9, adding uptime and the
            # alarm and fault bits, 17 ms), which also catches a second alarm type, a new
            # fault and a reboot. Only when they changed is the whole status block read
            # (alarm ids need the node's boot count and alarm sequence).
            dev.fast_polls += 1
            if dev.fast_polls % ALARM_WORD_EVERY:
                status = await self.rtu.read_input(dev.address, ALARM_WORD_START, 1)
                if status[0] == int(dev.decoder.values.get("status", -1)):
                    return None
            else:
                word = await self.rtu.read_input(dev.address, ALARM_WORD_START,
                                                  ALARM_WORD_COUNT)
                if not dev.decoder.alarm_word_changed(word):
                    return None
        count = COMMON_INPUTS if kind == "status" else dev.decoder.cmap.input_count
        return await self.rtu.read_input(dev.address, 0, count)

    async def _poll(self, dev: DevicePoll, kind: str) -> None:
        t = time.monotonic()
        # reschedule first, so an exception below can never leave a job due forever
        if kind == "status":
            dev.status_due = t + dev.status_s
        else:
            dev.telemetry_due = t + dev.telemetry_s
            dev.status_due = max(dev.status_due, t + dev.status_s)  # the full read covers it
        dev.polls += 1
        try:
            words = await self._read(dev, kind)
        except NoResponse as exc:
            dev.timeouts += 1
            self._failed(dev, str(exc))
            return
        except ModbusError as exc:
            dev.exceptions += 1
            log.warning("bus %s: %s", self.name, exc)
            return
        if words is None:  # alarm word unchanged: the node is alive and nothing happened
            self._answered(dev, t)
            return
        ts = now()
        try:
            messages = dev.decoder.update(words, ts)
        except ValueError as exc:
            log.error("bus %s: %s", self.name, exc)
            self._failed(dev, str(exc))
            return
        self._answered(dev, t)
        if kind == "telemetry":
            messages.append(dev.decoder.telemetry(words, ts))
        if messages:
            self.sink(messages)
        if self.on_update is not None:
            await self.on_update(dev.decoder)

    def _answered(self, dev: DevicePoll, t: float) -> None:
        if dev.failures:
            log.info("bus %s: %s answers again after %d failed polls", self.name, dev.id,
                     dev.failures)
        dev.failures = 0
        dev.last_ok = t

    def _failed(self, dev: DevicePoll, reason: str) -> None:
        dev.failures += 1
        if dev.failures == OFFLINE_AFTER:
            log.warning("bus %s: %s (address %d) offline: %s", self.name, dev.id, dev.address,
                        reason)
            self.sink(dev.decoder.offline(now(), reason))
        if dev.failures >= OFFLINE_AFTER:
            # back off: interval * 2^n with ±20 % jitter, capped
            exponent = min(dev.failures - OFFLINE_AFTER + 1, 16)  # no float overflow, ever
            delay = min(dev.max_backoff_s,
                        dev.status_s * 2 ** exponent * self._rng.uniform(0.8, 1.2))
            t = time.monotonic()
            dev.status_due = t + delay
            dev.telemetry_due = max(dev.telemetry_due, t + delay)
