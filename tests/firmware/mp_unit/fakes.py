# Test doubles for the HAL contract the sensor classes use, plus encoders for building raw
# readings from physics. The encoders are written from the formulas (not by calling the
# decoders), so a decoder that drifts from the documented formula fails a test.

import math

from app.drivers.scd41 import READ_MEASUREMENT
from scd41_chip import READ_EXEC_MS, Scd41Chip


class CountingChip(Scd41Chip):
    """The SCD41 stand-in, counting the commands it acknowledged (for the tests)."""

    def __init__(self, now_ms):
        Scd41Chip.__init__(self, now_ms)
        self.commands = {}

    def write(self, now_ms, cmd):
        Scd41Chip.write(self, now_ms, cmd)
        self.commands[cmd] = self.commands.get(cmd, 0) + 1

def sensor(name):
    """The generated app/sensors/<name>.py as a dict (the [name] table of sensors.toml)."""
    module = __import__("app.sensors." + name, None, None, ["x"])
    return {k: getattr(module, k) for k in dir(module) if not k.startswith("_")}


S = {n: sensor(n) for n in ("adc", "heat", "smoke", "loop", "water")}
FS = (1 << S["adc"]["bits"]) - 1
VREF = S["adc"]["vref"]


def counts_from_volts(v):
    c = int(v * FS / VREF + 0.5)
    return 0 if c < 0 else (FS if c > FS else c)


def ntc_counts(t_c):
    h = S["heat"]
    r = h["r25"] * math.exp(h["beta"] * (1.0 / (t_c + 273.15) - 1.0 / 298.15))
    return counts_from_volts(VREF * h["r_fixed"] / (r + h["r_fixed"]))


def smoke_counts(pct_m):
    return int(S["smoke"]["clean_counts"] + pct_m * S["smoke"]["counts_per_pct_m"] + 0.5)


def loop_counts(ma):
    return counts_from_volts(ma / 1000.0 * S["loop"]["shunt_ohms"])


def loop_counts_for(value, span):
    return loop_counts(4.0 + 16.0 * value / span)


def ph_counts(ph):
    w = S["water"]
    return counts_from_volts(w["ph_offset_v"] + (7.0 - ph) * w["ph_slope_v"] * w["ph_gain"])


def turbidity_counts(ntu):
    w = S["water"]
    return counts_from_volts(w["turbidity_offset_v"] + ntu * w["turbidity_v_per_ntu"])


def pms_frame(pm1, pm25, pm10, counts03=1200):
    words = [pm1, pm25, pm10, pm1, pm25, pm10, counts03, 300, 80, 10, 2, 1, 0]
    f = bytearray(32)
    f[0] = 0x42
    f[1] = 0x4D
    f[2] = 0
    f[3] = 28
    for i in range(13):
        f[4 + 2 * i] = words[i] >> 8
        f[5 + 2 * i] = words[i] & 0xFF
    s = 0
    for i in range(30):
        s += f[i]
    f[30] = (s >> 8) & 0xFF
    f[31] = s & 0xFF
    return bytes(f)


def sensirion_crc(b0, b1):
    crc = 0xFF
    for b in (b0, b1):
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def scd41_response(co2, t_c, rh):
    words = (co2, int((t_c + 45.0) * 65535 / 175.0 + 0.5), int(rh * 65535 / 100.0 + 0.5))
    out = bytearray(9)
    for i in range(3):
        out[3 * i] = words[i] >> 8
        out[3 * i + 1] = words[i] & 0xFF
        out[3 * i + 2] = sensirion_crc(out[3 * i], out[3 * i + 1])
    return bytes(out)


class FakeHal:
    """adc values from a dict (with a +/-1 count dither so nothing looks stuck unless a test
    wants it), a queue of UART chunks, and an SCD41 on I2C: the datasheet state machine of
    scd41_chip (the datasheet's, as the simulator's hardware/sim/scd41.py), measuring `i2c_reply`.

    i2c_reply: the 9 bytes the chip measures (bytes), or an exception instance: the chip is
    off the bus (every transfer NACKs). `now` is the fake clock, set by run_for()."""

    def __init__(self):
        self.counts = {}
        self.dither = True
        self._ticks = {}
        self.uart = []
        self.now = 0
        self.scd = CountingChip(0)
        self._reply = None
        self.i2c_calls = 0      # read_measurement transfers

    @property
    def i2c_reply(self):
        return self._reply

    @i2c_reply.setter
    def i2c_reply(self, value):
        self._reply = value
        self.scd.source = None if isinstance(value, Exception) else value

    def adc(self, channel):
        c = self.counts[channel]
        if isinstance(c, Exception):
            raise c
        if self.dither and 0 < c < FS:
            t = self._ticks.get(channel, 0) + 1
            self._ticks[channel] = t
            c += t & 1   # noise: real ADCs never read the same value forever
        return c

    def sensor_uart_read(self, name):
        assert name == "pms"
        if self.uart:
            return self.uart.pop(0)
        return b""

    def i2c_write(self, addr, cmd):
        assert addr == 0x62
        self.scd.write(self.now, cmd)

    def i2c_read(self, addr, cmd, n):
        assert addr == 0x62
        if cmd == READ_MEASUREMENT:
            self.i2c_calls += 1
        self.scd.write(self.now, cmd)
        return self.scd.read(self.now + READ_EXEC_MS, n)   # the HAL waits the 1 ms


class Clock:
    def __init__(self, start=1000, step=500):
        self.now = start
        self.step = step

    def tick(self, ms=None):
        self.now += self.step if ms is None else ms
        return self.now


def run_for(cls_obj, clock, seconds, hook=None):
    """Call sample() every clock.step ms for `seconds`."""
    hal = cls_obj.hal
    for _ in range(int(seconds * 1000 / clock.step)):
        if hook is not None:
            hook(clock.now)
        now = clock.tick()
        hal.now = now
        cls_obj.sample(now)
