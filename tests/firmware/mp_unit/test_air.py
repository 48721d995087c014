# Air-quality station through a fake HAL: PMS5003 frames on a UART, SCD41 on I2C, AQI, faults.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import Clock, FakeHal, pms_frame, run_for, scd41_response

from app import aqi
from app.classes.air import Air
from app.regbank import RegBank, class_map

BITS = class_map("air")["alarm_bits"]
FAULTS = class_map("air")["fault_bits"]
approx = mptest.approx


def A(name):
    return 1 << BITS[name]


def F(name):
    return 1 << FAULTS[name]


class Air_env:
    """A PMS5003 sending one frame a second, with the particle count varying like real air."""

    def __init__(self, pm1=5, pm25=12, pm10=20):
        self.pm = (pm1, pm25, pm10)
        self.sending = True
        self.corrupt = False
        self._n = 0
        self._last = None

    def __call__(self, hal, now):
        if not self.sending or (self._last is not None and now - self._last < 1000):
            return
        self._last = now
        self._n += 1
        f = bytearray(pms_frame(self.pm[0], self.pm[1], self.pm[2], 1200 + (self._n & 15)))
        if self.corrupt:
            f[12] ^= 0x10
        hal.uart.append(bytes(f))


def make(co2=650):
    hal = FakeHal()
    hal.i2c_reply = scd41_response(co2, 23.0, 55.0)
    env = Air_env()
    bank = RegBank("air")
    air = Air(hal, bank)
    clock = Clock()
    run_for(air, clock, 10, lambda now: env(hal, now))
    return hal, env, bank, air, clock


def run(air, clock, hal, env, seconds):
    run_for(air, clock, seconds, lambda now: env(hal, now))


def test_clean_air_reads_normal():
    hal, _env, bank, air, _clock = make()
    assert air.alarm_bits == 0 and air.fault_bits == 0, (air.alarm_bits, air.fault_bits)
    assert (bank.get("pm1_0"), bank.get("pm2_5"), bank.get("pm10")) == (5, 12, 20)
    assert bank.get("co2") == 650
    assert approx(bank.get("temperature"), 23.0, 0.05)
    assert approx(bank.get("humidity"), 55.0, 0.05)
    assert bank.get("aqi_vn") == aqi.vn_aqi(12, 20) == 24
    assert bank.get("aqi_us") == aqi.us_aqi(12, 20) == 56
    assert air.errors == 0
    assert hal.scd.commands.get(0x21B1) == 1     # started once, at boot
    assert hal.i2c_calls == 1             # first measurement 5 s after the start: one so far


def test_haze_raises_pm_and_aqi_alarms_then_clears():
    hal, env, bank, air, clock = make()
    env.pm = (60, 100, 140)
    run(air, clock, hal, env, 4)
    assert air.alarm_bits == A("pm25_high") | A("aqi_high"), air.alarm_bits
    assert bank.get("aqi_vn") == 164      # 150 + 50 * (100 - 80) / 70
    env.pm = (40, 52, 80)                 # below 55 but within the 5 µg/m³ hysteresis
    run(air, clock, hal, env, 4)
    assert air.alarm_bits & A("pm25_high")
    env.pm = (5, 12, 20)
    run(air, clock, hal, env, 4)
    assert air.alarm_bits == 0


def test_co2_alarm():
    hal, env, _bank, air, clock = make()
    hal.i2c_reply = scd41_response(1800, 24.0, 50.0)
    run(air, clock, hal, env, 6)
    assert air.alarm_bits == A("co2_high")
    hal.i2c_reply = scd41_response(1450, 24.0, 50.0)   # hysteresis 100 ppm: still on
    run(air, clock, hal, env, 6)
    assert air.alarm_bits == A("co2_high")
    hal.i2c_reply = scd41_response(900, 24.0, 50.0)
    run(air, clock, hal, env, 6)
    assert air.alarm_bits == 0


def test_silent_pms_times_out_and_drops_pm_alarms():
    hal, env, _bank, air, clock = make()
    env.pm = (60, 100, 140)
    run(air, clock, hal, env, 4)
    assert air.alarm_bits & A("pm25_high")
    env.sending = False
    run(air, clock, hal, env, 4)
    assert not air.fault_bits & F("pms_timeout")
    run(air, clock, hal, env, 2)
    assert air.fault_bits == F("pms_timeout"), air.fault_bits
    assert air.alarm_bits == 0
    env.sending = True
    run(air, clock, hal, env, 3)
    assert air.fault_bits == 0


def test_checksum_errors_counted_and_faulted():
    hal, env, _bank, air, clock = make()
    before = air.errors
    env.corrupt = True
    run(air, clock, hal, env, 4)
    assert air.errors >= before + 3
    assert air.fault_bits & F("pms_checksum"), air.fault_bits
    env.corrupt = False
    run(air, clock, hal, env, 5)
    assert not air.fault_bits & F("pms_checksum")


def test_garbage_between_frames_is_skipped():
    hal, env, bank, air, clock = make()
    hal.uart.append(b"\x00\x42\x99garbage\x4d")
    env.pm = (7, 9, 11)
    run(air, clock, hal, env, 4)
    assert bank.get("pm2_5") == 9 and air.fault_bits == 0


def test_scd41_nack_and_crc_failures_debounced():
    hal, env, bank, air, clock = make(co2=1800)
    assert air.alarm_bits == A("co2_high")
    errors = air.errors
    hal.i2c_reply = OSError(19)           # the sensor drops off the bus: every transfer NACKs
    run(air, clock, hal, env, 4)          # the interval under way ends without data
    assert air.errors == errors + 1, (errors, air.errors)
    assert not air.fault_bits & F("scd_fault")
    run(air, clock, hal, env, 10)         # two more 5 s intervals: three missed in a row
    assert air.fault_bits == F("scd_fault"), air.fault_bits
    assert air.alarm_bits == 0            # co2 alarm withdrawn: no trustworthy reading
    starts = hal.scd.commands.get(0x21B1, 0)
    bad = bytearray(scd41_response(700, 23.0, 50.0))
    bad[1] ^= 1
    hal.i2c_reply = bytes(bad)            # back on the bus, but every measurement fails its CRC
    run(air, clock, hal, env, 15)
    assert hal.scd.commands.get(0x21B1, 0) == starts + 1     # restarted once it answered
    assert air.fault_bits == F("scd_fault") and bank.get("co2") == 1800
    hal.i2c_reply = scd41_response(700, 23.0, 50.0)
    run(air, clock, hal, env, 6)
    assert bank.get("co2") == 700
    assert air.fault_bits == F("scd_fault")     # clearing is debounced too: 3 good reads
    run(air, clock, hal, env, 10)
    assert air.fault_bits == 0 and bank.get("co2") == 700


def test_impossible_pm_ordering_is_out_of_physics():
    hal, env, bank, air, clock = make()
    env.pm = (50, 30, 20)                 # PM1.0 > PM2.5 > PM10 cannot be
    run(air, clock, hal, env, 4)
    assert air.fault_bits == F("out_of_physics"), air.fault_bits
    assert bank.get("pm2_5") == 12        # the impossible values never reached the registers


def test_frozen_scd41_words_are_stuck():
    hal, env, _bank, air, clock = make()
    run(air, clock, hal, env, 130)
    assert air.fault_bits == F("stuck"), air.fault_bits


mptest.run(globals())
