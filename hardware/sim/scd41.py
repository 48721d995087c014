"""A Sensirion SCD41 as seen from its I2C bus: the datasheet's command state machine, on the
simulator's side of a firmware node's I2C channel.

A real ESP32 never carries a model of its sensor, so neither does a simulated node: the unix
HAL sends each I2C transfer to the simulator (:class:`hardware.sim.simbus.NodeProcess`), which
answers it from this model. The physics (:mod:`hardware.sim.physics`) owns the air the chip
measures and the chip's supply: per address, the 9-byte measurement it would take now (the
feed's "i2c") and a power-cycle counter ("power"); an address missing from "i2c" does not
acknowledge at all (a cut bus wire).

Behaviour modelled (SCD4x datasheet v1.3, Table 9 and sections 3.5-3.9):

- power-up: idle, not answering for the first 30 ms;
- start_periodic_measurement 0x21B1: idle only (NACK while measuring); first measurement 5 s
  later, then one every 5 s, each replacing the previous buffer;
- read_measurement 0xEC05: 9 bytes (3 words + CRC-8); NACK when no data is in the buffer
  (idle, or already read this interval: "the buffer is emptied upon read-out");
- get_data_ready_status 0xE4B8: one word + CRC; data ready when its low 11 bits are not 0
  (0x8006 here; 0x8000 when not ready: the top bits are NOT a ready flag);
- stop_periodic_measurement 0x3F86: back to idle; the chip answers nothing for 500 ms;
- reinit 0x3646: idle only, 20 ms busy; any other command: NACK;
- a read before the command's 1 ms execution time has passed: NACK.

Pure logic: times are milliseconds passed in by the caller (the simulator's monotonic clock).
A NACK is :class:`Nack`.
"""

from __future__ import annotations

START_PERIODIC = 0x21B1
READ_MEASUREMENT = 0xEC05
GET_DATA_READY = 0xE4B8
STOP_PERIODIC = 0x3F86
REINIT = 0x3646
POWER_UP_MS = 30.0
STOP_MS = 500.0
REINIT_MS = 20.0
INTERVAL_MS = 5000.0
EXEC_MS = 1.0


class Nack(Exception):
    """The chip did not acknowledge the transfer."""


def crc8(data: bytes) -> int:
    """Sensirion CRC-8 (poly 0x31, init 0xFF)."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


READY = b"\x80\x06" + bytes((crc8(b"\x80\x06"),))
NOT_READY = b"\x80\x00" + bytes((crc8(b"\x80\x00"),))


class Scd41Chip:
    """One SCD41's command state machine (see the module docstring)."""

    def __init__(self, now_ms: float):
        self.source: bytes | None = None   # what a measurement would give now (None: off the bus)
        self.periodic = False
        self._busy_until = 0.0
        self._next = 0.0
        self._buffer: bytes | None = None
        self._pending: tuple[int, float] | None = None
        self.power_on(now_ms)

    def power_on(self, now_ms: float) -> None:
        """A fresh supply: idle, measurements gone, deaf for the power-up time."""
        self.periodic = False
        self._busy_until = now_ms + POWER_UP_MS
        self._next = 0.0
        self._buffer = None
        self._pending = None

    def _ack(self, now_ms: float) -> None:
        if self.source is None or now_ms < self._busy_until:
            raise Nack
        while self.periodic and now_ms >= self._next:
            self._buffer = self.source       # only the latest measurement stays
            self._next += INTERVAL_MS

    def write(self, now_ms: float, cmd: int) -> None:
        """The write phase of a transfer: the 16-bit command. Nack when not acknowledged."""
        self._ack(now_ms)
        self._pending = None
        if cmd == START_PERIODIC and not self.periodic:
            self.periodic = True
            self._next = now_ms + INTERVAL_MS
            self._buffer = None
        elif cmd == STOP_PERIODIC:
            self.periodic = False
            self._buffer = None
            self._busy_until = now_ms + STOP_MS
        elif cmd == REINIT and not self.periodic:
            self._busy_until = now_ms + REINIT_MS
        elif cmd in (READ_MEASUREMENT, GET_DATA_READY):
            self._pending = (cmd, now_ms)
        else:
            raise Nack                        # unknown, or not allowed in this mode

    def read(self, now_ms: float, n: int) -> bytes:
        """The read phase after a read command. Nack when not acknowledged."""
        self._ack(now_ms)
        pending, self._pending = self._pending, None
        if pending is None or now_ms - pending[1] < EXEC_MS:
            raise Nack
        if pending[0] == GET_DATA_READY:
            return (NOT_READY if self._buffer is None else READY)[:n]
        data = self._buffer
        if data is None:
            raise Nack                        # no data in the buffer
        self._buffer = None                   # emptied upon read-out
        return data[:n]


class I2cBus:
    """The chips on one node's I2C bus, fed by the physics and answering the node's transfers.

    ``feed(snapshot, now_ms)`` takes the snapshot's "i2c" (address -> hex of the measurement)
    and "power" (address -> supply cycles); ``transfer(addr, cmd, n, now_ms)`` is one phase:
    n == 0 the command write, n > 0 the read of n bytes. Returns the bytes read (b"" for a
    write) or None for a NACK."""

    def __init__(self) -> None:
        self.chips: dict[int, Scd41Chip] = {}
        self._power: dict[int, int] = {}
        self._offset: float | None = None

    def node_started(self) -> None:
        """The node process (re)started: its clock is matched afresh."""
        self._offset = None

    def chip_time(self, node_ms: float, sim_ms: float) -> float:
        """The chip's time for a transfer the node stamped node_ms and the simulator read at
        sim_ms: the node's clock moved onto the simulator's by the smallest delay seen so far.
        A chip answers at once; the simulator reads a request late by a varying delay (a
        thread on a loaded machine), and timing phases by arrival would squeeze the 1 ms
        between a read command and its read-out below 1 ms, a NACK no board would see."""
        offset = sim_ms - node_ms
        if self._offset is None or offset < self._offset:
            self._offset = offset
        return node_ms + self._offset

    def feed(self, snapshot: dict[str, object], now_ms: float) -> None:
        i2c = snapshot.get("i2c")
        if not isinstance(i2c, dict):
            return
        for chip in self.chips.values():
            chip.source = None                 # off the bus unless the feed names it
        for key, value in i2c.items():
            addr = int(key)
            if addr not in self.chips:
                self.chips[addr] = Scd41Chip(now_ms)
            self.chips[addr].source = bytes.fromhex(str(value))
        power = snapshot.get("power")
        if isinstance(power, dict):
            for key, cycles in power.items():
                addr = int(key)
                powered = self.chips.get(addr)
                if powered is not None and self._power.get(addr, cycles) != cycles:
                    powered.power_on(now_ms)
                self._power[addr] = int(cycles)

    def transfer(self, addr: int, cmd: int, n: int, now_ms: float) -> bytes | None:
        chip = self.chips.get(addr)
        if chip is None:
            return None
        try:
            if n == 0:
                chip.write(now_ms, cmd)
                return b""
            return chip.read(now_ms, n)
        except Nack:
            return None
