# Sensirion SCD41 (CO2, temperature, humidity): the start-up and read-out sequence (Scd41) and
# the response decoding. The HAL does the I2C transfers (hal.i2c_write(addr, cmd) for a send
# command, hal.i2c_read(addr, cmd, n) for write-command / 1 ms / read); both raise OSError on
# a NACK.
#
# What the datasheet (SCD4x v1.3, Table 9) asks of a driver, and how Scd41 answers it:
#   - the sensor powers up IDLE and NACKs read_measurement until start_periodic_measurement
#     (0x21B1); a sensor still measuring (an MCU reset without a sensor power cycle) NACKs
#     that start, so every start is preceded by stop_periodic_measurement (0x3F86), after
#     which the sensor answers nothing for 500 ms: the driver waits without blocking;
#   - a measurement is ready every 5 s; get_data_ready_status (0xE4B8) says whether the
#     buffer holds one (low 11 bits not 0) and read_measurement empties it;
#   - NACK_LIMIT NACKs in a row (a sensor that browned out, a glitch on the bus), or
#     STALE_INTERVALS intervals in a row without data while the bus answers (a sensor
#     power-cycled back to idle), restart it: stop, 500 ms, start.
# poll(now_ms) is called at every sample and returns NEW (co2/t_word/rh_word hold a fresh
# measurement), MISSED (a measurement interval ended without a good one: the class counts a
# failed read) or NOTHING. Each call makes at most two short transfers (2 ms).
#
# Response layout: CO2 word, CRC8, T word, CRC8, RH word, CRC8; words big-endian. Each CRC-8
# covers the two bytes before it: polynomial 0x31, init 0xFF, no reflection, no final XOR
# (Sensirion check vector: crc8(0xBE, 0xEF) == 0x92).
#
#   CO2 [ppm] = word0
#   T   [°C]  = -45 + 175 * word1 / 65535
#   RH  [%]   = 100 * word2 / 65535
#
# Runs on MicroPython and CPython.

from app.sensors import scd41 as _scd41

try:
    from time import ticks_add, ticks_diff

    from micropython import const
except ImportError:  # CPython
    from app.filters import ticks_add, ticks_diff

    def const(x):
        return x

ADDR = _scd41.i2c_addr
READ_MEASUREMENT = _scd41.read_cmd
RESPONSE_LEN = 9
START_PERIODIC = 0x21B1
STOP_PERIODIC = 0x3F86
GET_DATA_READY = 0xE4B8
STOP_MS = 500          # stop_periodic_measurement execution time
INTERVAL_MS = 5000     # periodic measurement signal update interval
# private constants: const() makes MicroPython inline them (no globals, no heap)
_POLL_MS = const(500)          # data-ready polling while a measurement is due
_GRACE_MS = const(1500)        # a measurement later than interval + this is missed
_NACK_LIMIT = const(3)         # NACKs in a row that restart the sensor
_STALE_INTERVALS = const(2)    # intervals in a row without data ready that restart it

NOTHING = 0
NEW = 1
MISSED = 2

_RESTART = const(0)    # send stop, then wait
_STOPPING = const(1)   # waiting STOP_MS before start
_RUNNING = const(2)


def crc8(buf, start=0, end=None):
    """Sensirion CRC-8 of buf[start:end] (poly 0x31, init 0xFF)."""
    if end is None:
        end = len(buf)
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def word(buf, index):
    """Data word index (0, 1, 2) of a response, after checking its CRC; ValueError if bad."""
    off = index * 3
    if buf is None or len(buf) < off + 3:
        raise ValueError("scd41: short response")
    if crc8(buf, off, off + 2) != buf[off + 2]:
        raise ValueError("scd41: crc")
    return (buf[off] << 8) | buf[off + 1]


def temperature(word1):
    return -45.0 + 175.0 * word1 / 65535.0


def humidity(word2):
    return 100.0 * word2 / 65535.0


def decode(buf):
    """(co2_ppm, temperature_c, humidity_pct) from a 9-byte response; ValueError on a bad CRC
    or a short response."""
    co2 = word(buf, 0)
    t = word(buf, 1)
    rh = word(buf, 2)
    return co2, temperature(t), humidity(rh)


class Scd41:
    """Start-up, data-ready polling and NACK recovery of one SCD41 (see the module comment)."""

    def __init__(self, hal, interval_ms=INTERVAL_MS):
        self.hal = hal
        self.interval_ms = interval_ms
        self.co2 = self.t_word = self.rh_word = None
        self.restarts = 0        # stop/start sequences sent (the first one at boot)
        self.nacks = 0           # consecutive NACKs
        self._stale = 0          # consecutive intervals in which data was never ready
        self._ready_seen = False
        self._state = _RESTART
        self._t = 0              # end of the stop wait
        self._next_poll = 0
        self._due = None         # a measurement should have arrived by then

    def poll(self, now_ms):
        if self._due is None:
            self._due = ticks_add(now_ms, STOP_MS + self.interval_ms + _GRACE_MS)
        state = self._state
        if state == _RESTART:
            self.restarts += 1
            try:
                self.hal.i2c_write(ADDR, STOP_PERIODIC)   # idle or measuring: both accept it
            except OSError:
                pass                                       # absent: the start will tell
            self._state = _STOPPING
            self._t = ticks_add(now_ms, STOP_MS)
        elif state == _STOPPING:
            if ticks_diff(now_ms, self._t) >= 0:
                try:
                    self.hal.i2c_write(ADDR, START_PERIODIC)
                except OSError:
                    self.nacks += 1
                    self._state = _RESTART
                else:
                    self.nacks = 0
                    self._stale = 0
                    self._ready_seen = False
                    self._state = _RUNNING
                    self._next_poll = ticks_add(now_ms, self.interval_ms)
                    self._due = ticks_add(now_ms, self.interval_ms + _GRACE_MS)
        elif ticks_diff(now_ms, self._next_poll) >= 0:
            if self._read(now_ms):
                return NEW
        if ticks_diff(now_ms, self._due) >= 0:
            self._due = ticks_add(now_ms, self.interval_ms)
            if self._state == _RUNNING and not self._ready_seen:
                self._stale += 1
                if self._stale >= _STALE_INTERVALS:
                    self._state = _RESTART  # answering but not measuring: back in idle
            self._ready_seen = False
            return MISSED
        return NOTHING

    def _read(self, now_ms):
        hal = self.hal
        self._next_poll = ticks_add(now_ms, _POLL_MS)
        try:
            if not word(hal.i2c_read(ADDR, GET_DATA_READY, 3), 0) & 0x7FF:
                self.nacks = 0
                return False
            self._ready_seen = True
            self._stale = 0
            buf = hal.i2c_read(ADDR, READ_MEASUREMENT, RESPONSE_LEN)
            co2 = word(buf, 0)
            t_word = word(buf, 1)
            rh_word = word(buf, 2)
        except OSError:
            self.nacks += 1
            if self.nacks >= _NACK_LIMIT:
                self.nacks = 0
                self._state = _RESTART
            return False
        except ValueError:   # CRC: the buffer is gone, the next measurement comes in 5 s
            self.nacks = 0
            return False
        self.nacks = 0
        self.co2 = co2
        self.t_word = t_word
        self.rh_word = rh_word
        self._next_poll = ticks_add(now_ms, self.interval_ms - _POLL_MS)
        self._due = ticks_add(now_ms, self.interval_ms + _GRACE_MS)
        return True
