"""A simulated multi-drop RS-485 bus: one master pseudo-terminal, many node pseudo-terminals.

Whatever one party transmits, every other party hears, as on a real two-wire bus. With pacing on,
a transmission reaches the others only after its wire time at the configured baud rate (11-bit
characters: start, 8 data, parity, stop), so a master on the pty sees real bus timing; two nodes
talking at once collide and the master hears garbage, as it would on the wire.

Fault injection (runtime-adjustable, for tests and field-technician training): bit noise and
dropped bytes on delivery, a dead node (its port silenced both ways). Two nodes with one address
need no special support: start both, and their replies collide.

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

@dataclass
class Faults:
    """What the hub does to bytes in flight. Rates are per byte, 0..1."""

    bit_noise: float = 0.0
    drop: float = 0.0
    dead_ports: set[int] = field(default_factory=set)
    seed: int = 0
    # Replies from these node addresses are rewritten, with a valid CRC, as a node with a
    # firmware bug would send them: "short" drops the last register of a register read (byte
    # count and length agree), "function" answers with the other register-read function code.
    bad_replies: dict[int, str] = field(default_factory=dict)


@dataclass
class HubStats:
    frames: int = 0
    bytes: int = 0
    collisions: int = 0
    corrupted_bytes: int = 0
    dropped_bytes: int = 0


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
            events = poller.poll(100)
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
        if self.paced:
            data = self._wait_wire(sender, data, start, poller, index)
        if sender and data and data[0] in self.faults.bad_replies:
            data = bad_reply(data, self.faults.bad_replies[data[0]])
        self.stats.frames += 1
        self.stats.bytes += len(data)
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
            if remaining > 0.002:
                events = poller.poll(int(remaining * 1000) - 1)
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
            else:
                time.sleep(remaining)

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
    """A register-read reply (FC03/FC04) rewritten by ``mode``, CRC recomputed; others unchanged."""
    if len(frame) < 7 or frame[1] not in (3, 4) or _crc16(frame[:-2]) != frame[-2:]:
        return frame
    body = bytearray(frame[:-2])
    if mode == "short" and body[2] >= 2:
        del body[-2:]
        body[2] -= 2
    elif mode == "function":
        body[1] = 3 if body[1] == 4 else 4
    return bytes(body) + _crc16(bytes(body))
