# A Sensirion SCD41 as seen from its I2C bus: the datasheet's command state machine, for the
# unix port's HAL (the node process's stand-in for the chip) and for the unit tests' fake HAL.
# Never imported on an ESP32, where the real chip answers.
#
# I2C is synchronous: the chip must answer each transfer the moment the firmware makes it, so
# the state machine runs in the node process; the simulator (hardware/sim/physics.py) owns the
# air the chip measures and the chip's supply. Through the unix HAL's feed it gives, per
# address, the 9-byte measurement the chip would take now ("i2c") and a power-cycle counter
# ("power"); an address missing from "i2c" does not acknowledge at all (a cut bus wire).
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

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython
    from app.filters import ticks_add, ticks_diff

ENODEV = 19

START_PERIODIC = 0x21B1
READ_MEASUREMENT = 0xEC05
STOP_PERIODIC = 0x3F86
GET_DATA_READY = 0xE4B8
REINIT = 0x3646

INTERVAL_MS = 5000
POWER_UP_MS = 30
STOP_MS = 500
REINIT_MS = 20
READ_EXEC_MS = 1

IDLE = 0
PERIODIC = 1


def _crc8(b0, b1):
    crc = 0xFF
    for b in (b0, b1):
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _word(value):
    hi = (value >> 8) & 0xFF
    lo = value & 0xFF
    return bytes((hi, lo, _crc8(hi, lo)))


class Scd41Chip:
    def __init__(self, now_ms):
        self.source = None        # 9 bytes: what a measurement would give now (None: off the bus)
        self.power_on(now_ms)
        self.commands = {}        # command -> times received (acknowledged), for tests

    def power_on(self, now_ms):
        """A fresh supply: idle, measurements gone, deaf for the power-up time."""
        self.mode = IDLE
        self._busy_until = ticks_add(now_ms, POWER_UP_MS)
        self._next_meas = None
        self._buffer = None
        self._pending = None      # (command, time written) awaiting the read phase

    def _advance(self, now_ms):
        # Take every measurement due by now (only the latest stays in the buffer).
        while self.mode == PERIODIC and ticks_diff(now_ms, self._next_meas) >= 0:
            self._buffer = self.source
            self._next_meas = ticks_add(self._next_meas, INTERVAL_MS)

    def _ack(self, now_ms):
        if self.source is None or ticks_diff(now_ms, self._busy_until) < 0:
            raise OSError(ENODEV)
        self._advance(now_ms)

    def write(self, now_ms, cmd):
        """The write phase of a transfer: the 16-bit command. OSError when not acknowledged."""
        self._ack(now_ms)
        self._pending = None
        if cmd == START_PERIODIC and self.mode == IDLE:
            self.mode = PERIODIC
            self._next_meas = ticks_add(now_ms, INTERVAL_MS)
            self._buffer = None
        elif cmd == STOP_PERIODIC:
            self.mode = IDLE
            self._buffer = None
            self._busy_until = ticks_add(now_ms, STOP_MS)
        elif cmd == REINIT and self.mode == IDLE:
            self._busy_until = ticks_add(now_ms, REINIT_MS)
        elif cmd in (READ_MEASUREMENT, GET_DATA_READY):
            self._pending = (cmd, now_ms)
        else:
            raise OSError(ENODEV)   # unknown, or not allowed in this mode
        self.commands[cmd] = self.commands.get(cmd, 0) + 1

    def read(self, now_ms, n):
        """The read phase after a read command. OSError when not acknowledged."""
        self._ack(now_ms)
        pending = self._pending
        self._pending = None
        if pending is None or ticks_diff(now_ms, pending[1]) < READ_EXEC_MS:
            raise OSError(ENODEV)
        if pending[0] == GET_DATA_READY:
            return _word(0x8006 if self._buffer is not None else 0x8000)[:n]
        if self._buffer is None:
            raise OSError(ENODEV)   # no data in the buffer
        data = self._buffer
        self._buffer = None         # emptied upon read-out
        return data[:n]
