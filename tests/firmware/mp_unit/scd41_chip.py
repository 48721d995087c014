# A Sensirion SCD41 as seen from its I2C bus, in MicroPython, for the unit tests' fake HAL
# (fakes.FakeHal) and the ESP32 HAL test: the datasheet's command state machine on a fake clock.
# It lives in tests/ and never runs in a node: a simulated node's transfers are answered by the
# simulator's model (hardware/sim/scd41.py), as a board's are by the chip outside its MCU.
#
# Behaviour modelled (SCD4x datasheet v1.3, Table 9 and sections 3.5-3.9):
#   - power-up: idle, not answering for the first 30 ms;
#   - start_periodic_measurement 0x21B1: idle only (NACK while measuring); first measurement
#     5 s later, then one every 5 s, each replacing the previous buffer;
#   - read_measurement 0xEC05: 9 bytes (3 words + CRC-8); NACK when no data is in the buffer
#     (idle, or already read this interval: "the buffer is emptied upon read-out");
#   - get_data_ready_status 0xE4B8: one word + CRC; data ready when its low 11 bits are not 0
#     (0x8006 here; 0x8000 when not ready: the top bits are NOT a ready flag);
#   - stop_periodic_measurement 0x3F86: back to idle; the chip answers nothing for 500 ms;
#   - reinit 0x3646: idle only, 20 ms busy; any other command: NACK;
#   - a read before the command's 1 ms execution time has passed: NACK.
# A NACK is OSError(ENODEV) here, as MicroPython's machine.I2C raises for an unacknowledged
# transfer on an ESP32.
#
# Times are ticks_ms values passed in by the caller (real ticks on the unix port, a fake clock
# in the unit tests); they are compared with ticks_diff only.

from app.drivers.scd41 import (
    GET_DATA_READY, INTERVAL_MS, READ_MEASUREMENT, START_PERIODIC, STOP_MS, STOP_PERIODIC, const,
    crc8, ticks_add, ticks_diff,
)

_POWER_UP_MS = const(30)
_REINIT = const(0x3646)        # idle only, 20 ms
READ_EXEC_MS = 1
IDLE = 0
PERIODIC = 1
_READY = b"\x80\x06" + bytes((crc8(b"\x80\x06"),))        # low 11 bits not 0: data ready
_NOT_READY = b"\x80\x00" + bytes((crc8(b"\x80\x00"),))    # top bits set, low 11 bits 0


class Scd41Chip:
    def __init__(self, now_ms):
        self.source = None        # 9 bytes: what a measurement would give now (None: off the bus)
        self.power_on(now_ms)

    def power_on(self, now_ms):
        """A fresh supply: idle, measurements gone, deaf for the power-up time."""
        self.mode = IDLE
        self._busy = ticks_add(now_ms, _POWER_UP_MS)
        self._next = 0            # next measurement (periodic mode)
        self._buffer = None
        self._pending = None      # (command, time written) awaiting the read phase

    def _ack(self, now_ms):
        # NACK when off the bus or busy; otherwise take every measurement due by now (only the
        # latest stays in the buffer).
        if self.source is None or ticks_diff(now_ms, self._busy) < 0:
            raise OSError(19)     # ENODEV
        while self.mode == PERIODIC and ticks_diff(now_ms, self._next) >= 0:
            self._buffer = self.source
            self._next = ticks_add(self._next, INTERVAL_MS)

    def write(self, now_ms, cmd):
        """The write phase of a transfer: the 16-bit command. OSError when not acknowledged."""
        self._ack(now_ms)
        self._pending = None
        if cmd == START_PERIODIC and self.mode == IDLE:
            self.mode = PERIODIC
            self._next = ticks_add(now_ms, INTERVAL_MS)
            self._buffer = None
        elif cmd == STOP_PERIODIC:
            self.mode = IDLE
            self._buffer = None
            self._busy = ticks_add(now_ms, STOP_MS)
        elif cmd == _REINIT and self.mode == IDLE:
            self._busy = ticks_add(now_ms, 20)
        elif cmd == READ_MEASUREMENT or cmd == GET_DATA_READY:
            self._pending = (cmd, now_ms)
        else:
            raise OSError(19)     # unknown, or not allowed in this mode

    def read(self, now_ms, n):
        """The read phase after a read command. OSError when not acknowledged."""
        self._ack(now_ms)
        pending = self._pending
        self._pending = None
        if pending is None or ticks_diff(now_ms, pending[1]) < READ_EXEC_MS:
            raise OSError(19)
        if pending[0] == GET_DATA_READY:
            return (_NOT_READY if self._buffer is None else _READY)[:n]
        data = self._buffer
        if data is None:
            raise OSError(19)     # no data in the buffer
        self._buffer = None       # emptied upon read-out
        return data[:n]
