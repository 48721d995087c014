"""A simulated multi-drop RS-485 bus: one master pseudo-terminal, many node pseudo-terminals.

Whatever one party transmits, every other party hears, as on a real two-wire bus. With pacing on,
a transmission reaches the others only after its wire time at the configured baud rate (11-bit
characters: start, 8 data, parity, stop), so a master on the pty sees real bus timing; two nodes
talking at once collide and the master hears garbage, as it would on the wire.

Fault injection (runtime-adjustable, for tests and field-technician training): bit noise and
dropped bytes on delivery, a dead node (its port silenced both ways), and a babbling bus (a stuck
transmitter somewhere on the pair driving random bytes at the line rate without a pause: every
party hears them, and whatever else is sent meanwhile collides with them). Two nodes with one
address need no special support: start both, and their replies collide.

The hub runs in one thread and owns every pty master fd (one owner per resource). Pacing sleeps
use time.sleep (nanosleep, ~0.1 ms precision) rather than the millisecond-granular poll timeout.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass, field

from hardware.serialline import char_time, tighten_timer_slack

log = logging.getLogger(__name__)

BABBLE_LEAD_S = 0.05  # how far ahead of the wire a stuck transmitter's bytes are delivered
# A sleep wakes 40-60 us late on this kind of VM even with 1 us timer slack; the wire does not.
# The hub sleeps until this long before a transmission's end and spins the rest, so delivery
# is late by ~10 us instead of ~45 us per frame (two frames per transaction: ~1 % of a
# 115200-baud bus that the simulator, not the master or the node, was losing).
WAKE_EARLY_S = 0.00008

@dataclass
class Faults:
    """What the hub does to bytes in flight. Rates are per byte, 0..1."""

    bit_noise: float = 0.0
    drop: float = 0.0
    dead_ports: set[int] = field(default_factory=set)
    babble: bool = False
    seed: int = 0
    # Replies from these node addresses are rewritten, with a valid CRC, as a node with a
    # firmware bug would send them: "short" drops the last register of a register read (byte
    # count and length agree), "function" answers with the other register-read function code,
    # "echo" answers a write (FC05/06/15/16) with the next address echoed, as the late answer
    # to another write would read.
    bad_replies: dict[int, str] = field(default_factory=dict)


@dataclass
class HubStats:
    frames: int = 0
    bytes: int = 0
    collisions: int = 0
    corrupted_bytes: int = 0
    dropped_bytes: int = 0
    babble_bytes: int = 0
    # The shortest silence each port kept before it started transmitting: from the end of the
    # previous transmission's wire time (when the hub hands its bytes to the receivers) to the
    # moment the hub read the port's first byte. No party can have heard the previous frame
    # earlier, so a value below t3.5 is a broken silent interval.
    min_gap_s: dict[int, float] = field(default_factory=dict)


def _open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    # Non-blocking: the hub may drain a port inside a wire-time wait, after poll() reported it
    # readable in the outer loop; a blocking read there would hang the whole bus.
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class BusHub:
    """Port 0 is the master side; nodes get ports 1.. in the order add_port() is called."""

    def __init__(self, baud: int = 19200, paced: bool = True, faults: Faults | None = None):
        self.baud = baud
        self.paced = paced
        self.faults = faults or Faults()
        self.stats = HubStats()
        self._rng = random.Random(self.faults.seed)
        self._masters: list[int] = []
        self._slaves: list[int] = []  # kept open so a party closing its end never HUPs the hub
        self.paths: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._babble_rng = random.Random(self.faults.seed + 1)
        self._babble_sent_at: float | None = None
        self._line_free_at: float | None = None
        # Set to a list to record every transmission as (sender port, when the hub read its
        # first bytes, when it handed them to the receivers, length): the bench's per-frame
        # timing. Appending costs well under a microsecond; nothing else changes.
        self.trace: list[tuple[int, float, float, int]] | None = None
        self.add_port()

    @property
    def master_path(self) -> str:
        return self.paths[0]

    def add_port(self) -> str:
        master, slave, path = _open_pty()
        self._masters.append(master)
        self._slaves.append(slave)
        self.paths.append(path)
        return path

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bus-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for fd in self._masters + self._slaves:
            try:
                os.close(fd)
            except OSError:
                pass
        self._masters.clear()
        self._slaves.clear()

    def __enter__(self) -> BusHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop ---------------------------------------------------------------------
    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except OSError as exc:  # EIO: nobody has the other end open right now
            if exc.errno not in (errno.EIO, errno.EAGAIN):
                raise
            return b""

    def _run(self) -> None:
        tighten_timer_slack()
        poller = select.poll()
        index = {}
        for port, fd in enumerate(self._masters):
            poller.register(fd, select.POLLIN)
            index[fd] = port
        while not self._stop.is_set():
            if self.faults.babble:
                # A stuck transmitter never pauses: deliver its stream in sub-millisecond
                # chunks, so no receiver sees a silence near t3.5 in it.
                events = poller.poll(0)
                if not events:
                    time.sleep(0.0003)
            else:
                events = poller.poll(100)
            self._babble()
            for fd, ev in events:
                if ev & select.POLLIN:
                    data = self._read(fd)
                    if data:
                        self._transmit(index[fd], data, poller, index)
                elif ev & (select.POLLHUP | select.POLLERR):
                    # The far end is closed; don't spin on it.
                    time.sleep(0.01)

    def _transmit(self, sender: int, data: bytes, poller: select.poll,
                  index: dict[int, int]) -> None:
        if sender in self.faults.dead_ports:
            return  # a dead node's transmitter is gone
        start = time.perf_counter()
        if self._line_free_at is not None:
            gap = start - self._line_free_at
            if gap < self.stats.min_gap_s.get(sender, float("inf")):
                self.stats.min_gap_s[sender] = gap
        if self.paced:
            data = self._wait_wire(sender, data, start, poller, index)
        if sender and data and data[0] in self.faults.bad_replies:
            data = bad_reply(data, self.faults.bad_replies[data[0]])
        if self.faults.babble:
            data = self._collide(data, self._babble_rng.randbytes(len(data)))
        self.stats.frames += 1
        self.stats.bytes += len(data)
        # Stamped before the first write: a receiver in this process (a test's master) may take
        # the interpreter lock the moment its bytes arrive, and a stamp after the writes would
        # then be late, making the next silence look shorter than it was.
        self._line_free_at = time.perf_counter()
        if self.trace is not None:
            self.trace.append((sender, start, self._line_free_at, len(data)))
        for port, fd in enumerate(self._masters):
            if port == sender or port in self.faults.dead_ports:
                continue
            out = self._inject(data)
            if out:
                try:
                    os.write(fd, out)
                except OSError:
                    pass  # a node restarting: its bytes are lost, as on a real bus

    def _wait_wire(self, sender: int, data: bytes, start: float, poller: select.poll,
                   index: dict[int, int]) -> bytes:
        """Hold a transmission for its wire time; anything another party sends meanwhile
        collides with it (and extends the busy time)."""
        end = start + len(data) * char_time(self.baud)
        while True:
            remaining = end - time.perf_counter()
            if remaining <= 0:
                return data
            self._babble()
            if remaining > 0.002:
                timeout_ms = int(remaining * 1000) - 1
                if self.faults.babble:
                    timeout_ms = 0  # keep the stuck transmitter's stream going meanwhile
                    time.sleep(0.0003)
                events = poller.poll(timeout_ms)
                for fd, ev in events:
                    if not ev & select.POLLIN:
                        continue
                    other = self._read(fd)
                    if not other:
                        continue
                    if index[fd] == sender:
                        data += other  # the same talker, still sending
                    elif index[fd] not in self.faults.dead_ports:
                        data = self._collide(data, other)
                    end = max(end, time.perf_counter() + len(other) * char_time(self.baud))
            elif remaining > WAKE_EARLY_S:
                time.sleep(remaining - WAKE_EARLY_S)
            # else: spin out the last few microseconds (below)

    def _babble(self) -> None:
        """While the babble fault is on, put the line-rate stream of a stuck transmitter on the
        bus: every byte time that passed since the last call, a random byte to every port."""
        if not self.faults.babble:
            self._babble_sent_at = None
            return
        now = time.perf_counter()
        if self._babble_sent_at is None:
            self._babble_sent_at = now
            return
        # Stay a little ahead of the line rate: the hub thread shares the interpreter lock, and
        # a pause in its stream would be a silence a receiver could cut a frame at.
        count = int((now + BABBLE_LEAD_S - self._babble_sent_at) / char_time(self.baud))
        if count <= 0:
            return
        self._babble_sent_at += count * char_time(self.baud)
        noise = self._babble_rng.randbytes(min(count, 4096))
        self.stats.babble_bytes += len(noise)
        for port, fd in enumerate(self._masters):
            if port in self.faults.dead_ports:
                continue
            try:
                os.write(fd, noise)
            except OSError:
                pass  # a full or restarting receiver loses bytes, as on a real bus

    def _collide(self, a: bytes, b: bytes) -> bytes:
        self.stats.collisions += 1
        longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
        mixed = bytearray(longer)
        for i, byte in enumerate(shorter):
            mixed[i] ^= byte  # two drivers fighting: the receiver decodes neither
        return bytes(mixed)

    def _inject(self, data: bytes) -> bytes:
        faults = self.faults
        if not faults.bit_noise and not faults.drop:
            return data
        out = bytearray()
        for byte in data:
            if faults.drop and self._rng.random() < faults.drop:
                self.stats.dropped_bytes += 1
                continue
            if faults.bit_noise and self._rng.random() < faults.bit_noise:
                byte ^= 1 << self._rng.randrange(8)
                self.stats.corrupted_bytes += 1
            out.append(byte)
        return bytes(out)


# -- bad replies (Faults.bad_replies) ---------------------------------------------------------
def _crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def bad_reply(frame: bytes, mode: str) -> bytes:
    """A reply rewritten by ``mode``, CRC recomputed: a register read's (FC03/FC04) by "short"
    and "function", a write's (FC05/06/15/16) by "echo"; any other frame unchanged."""
    if len(frame) < 7 or _crc16(frame[:-2]) != frame[-2:]:
        return frame
    body = bytearray(frame[:-2])
    if mode == "echo":
        if body[1] not in (5, 6, 15, 16) or len(body) != 6:
            return frame
        echoed = ((body[2] << 8 | body[3]) + 1) & 0xFFFF
        body[2:4] = echoed.to_bytes(2, "big")
        return bytes(body) + _crc16(bytes(body))
    if frame[1] not in (3, 4):
        return frame
    if mode == "short" and body[2] >= 2:
        del body[-2:]
        body[2] -= 2
    elif mode == "function":
        body[1] = 3 if body[1] == 4 else 4
    return bytes(body) + _crc16(bytes(body))
