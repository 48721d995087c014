# Air-quality station: Plantower PMS5003 (PM1.0 / PM2.5 / PM10 over a UART, active mode, one
# frame every ~1 s) and Sensirion SCD41 (CO2 / T / RH over I2C, a new measurement every 5 s in
# periodic mode), plus VN_AQI and US AQI computed from the PM readings.
#
# PM: every good frame's atmospheric values go through a 3-frame median (one odd frame never
# alarms alone); pm1_0/pm2_5/pm10 and both AQIs hold the filtered values. The AQIs are
# instantaneous indications (see app.aqi). SCD41: app.drivers.scd41.Scd41 starts it (stop,
# 500 ms, start_periodic_measurement) at boot and whenever it stops answering or stops
# measuring, and reads it when get_data_ready_status says so (every scd_period_ms); each
# measurement interval that ends without a good reading (NACKs, a bad CRC-8, an idle sensor)
# counts an error, and fault_debounce of them in a row set scd_fault.
#
# Faults:
#   pms_timeout     no good frame for pms_timeout_ms (5 s): PM alarms and aqi_high are cleared
#   pms_checksum    fault_debounce samples in a row brought checksum errors and no good frame
#   scd_fault       fault_debounce failed SCD41 reads in a row: co2_high is cleared
#   stuck           the SCD41 T and RH words, or the whole PMS5003 frame, bit-for-bit identical
#                   for stuck_hold_ms (real sensors always carry noise in those)
#   out_of_physics  PM1.0 > PM2.5 or PM2.5 > PM10 (the sizes are cumulative), PM above the
#                   sensor's range, CO2 above 40000 ppm, T outside -10..60 °C (SCD41 range).
#                   The reading is discarded; fault_debounce of them in a row set the bit.

from app import aqi
from app.classes._base import SensorClass, options
from app.drivers import scd41
from app.drivers.pms5003 import PMS5003
from app.filters import Debounce, Median, StuckDetector, above, ticks_diff
from app.sensors import pms5003 as _pms5003

_PMS_UART = _pms5003.uart

DEFAULTS = {
    "pm_median": 3,             # frames in the PM median filter
    "pms_timeout_ms": 5000,     # no good frame this long => pms_timeout
    "scd_period_ms": 5000,      # SCD41 periodic measurement interval
    "pm_max": 1000,             # µg/m³, PMS5003 maximum range
    "co2_max": 40000,           # ppm, SCD41 output range
    "t_min": -10.0,             # °C, SCD41 operating range
    "t_max": 60.0,
    "stuck_hold_ms": 120000,
    "stuck_min_samples": 20,
}


class Air(SensorClass):
    name = "air"

    def __init__(self, hal, bank, config=None):
        SensorClass.__init__(self, hal, bank)
        self.opts = o = options(DEFAULTS, config)
        self.pms = PMS5003()
        self.scd = scd41.Scd41(hal, o["scd_period_ms"])
        self._pm1 = Median(o["pm_median"])
        self._pm25 = Median(o["pm_median"])
        self._pm10 = Median(o["pm_median"])
        self._pms_stuck = StuckDetector(o["stuck_hold_ms"], o["stuck_min_samples"])
        self._scd_t_stuck = StuckDetector(o["stuck_hold_ms"], o["stuck_min_samples"])
        self._scd_rh_stuck = StuckDetector(o["stuck_hold_ms"], o["stuck_min_samples"])
        self._f_checksum = Debounce()
        self._f_scd = Debounce()
        self._f_pms_phys = Debounce()
        self._f_scd_phys = Debounce()
        self._pms_bad = 0            # checksum + sync errors seen so far
        self._last_frame_ms = None   # time of the latest good frame (None: none since boot)
        self._boot_ms = None
        self._timed_out = False
        self._pm_ok = False          # PM readings current (not timed out / faulted)
        self._co2_ok = False
        self._a_pm25 = self._a_pm10 = self._a_co2 = self._a_aqi = False
        self.pm1_0 = self.pm2_5 = self.pm10 = None   # filtered, µg/m³
        self.co2 = self.temperature = self.humidity = None
        self.aqi_vn = self.aqi_us = None

    def reset(self):
        # Nothing latches; re-arm every comparator.
        self._a_pm25 = self._a_pm10 = self._a_co2 = self._a_aqi = False
        self._publish()

    def _sample(self, now_ms):
        bank = self.bank
        o = self.opts
        n = int(bank.threshold("fault_debounce"))
        if self._boot_ms is None:
            self._boot_ms = now_ms

        # -- PMS5003 --------------------------------------------------------------------------
        try:
            data = self.hal.sensor_uart_read(_PMS_UART)
        except Exception:  # noqa: BLE001
            data = None
            self.errors += 1
        good = 0
        if data:
            good = self._feed_pms(data, now_ms, o)
            if good < 0:          # frames arrived but were physically impossible
                self._f_pms_phys.update(True, n)
                good = 0
            elif good:
                self._f_pms_phys.update(False, n)
        pms = self.pms
        bad_now = pms.checksum_errors + pms.sync_errors
        new_bad = bad_now - self._pms_bad
        self._pms_bad = bad_now
        if new_bad > 0:
            self.errors += new_bad
            if not good:
                self._f_checksum.update(True, n)
        elif good:
            self._f_checksum.update(False, n)
        since = self._last_frame_ms if self._last_frame_ms is not None else self._boot_ms
        timed_out = ticks_diff(now_ms, since) >= o["pms_timeout_ms"]
        if timed_out and not self._timed_out:
            self.errors += 1      # one timeout event
        self._timed_out = timed_out
        self._pm_ok = self.pm2_5 is not None and not timed_out and not self._f_pms_phys.state
        if not self._pm_ok:
            self._a_pm25 = self._a_pm10 = self._a_aqi = False
        elif good:
            pm_hyst = bank.threshold("pm_hysteresis")
            self._a_pm25 = above(self._a_pm25, self.pm2_5, bank.threshold("pm25_alarm"), pm_hyst)
            self._a_pm10 = above(self._a_pm10, self.pm10, bank.threshold("pm10_alarm"), pm_hyst)
            self._a_aqi = above(self._a_aqi, self.aqi_vn, bank.threshold("aqi_alarm"),
                                bank.threshold("aqi_hysteresis"))

        # -- SCD41 ----------------------------------------------------------------------------
        self._read_scd(now_ms, o, n)
        self._co2_ok = (self.co2 is not None and not self._f_scd.state
                        and not self._f_scd_phys.state)
        if not self._co2_ok:
            self._a_co2 = False
        self._publish()

    def _feed_pms(self, data, now_ms, o):
        # Returns the number of good frames (their latest values applied), or -1 when the
        # frames were good but physically impossible.
        pms = self.pms
        before = pms.frames
        pms.feed(data)
        good = pms.frames - before
        if good <= 0:
            return 0
        p1, p25, p10 = pms.pm1_0, pms.pm2_5, pms.pm10
        self._last_frame_ms = now_ms
        self._pms_stuck.update(now_ms, pms.frame_checksum)
        if not (p1 <= p25 <= p10) or p10 > o["pm_max"]:
            self.errors += 1
            return -1
        self.pm1_0 = v1 = self._pm1.update(p1)
        self.pm2_5 = v25 = self._pm25.update(p25)
        self.pm10 = v10 = self._pm10.update(p10)
        self.aqi_vn = aqi.vn_aqi(v25, v10)
        self.aqi_us = aqi.us_aqi(v25, v10)
        bank = self.bank
        bank.set("pm1_0", v1)
        bank.set("pm2_5", v25)
        bank.set("pm10", v10)
        bank.set("aqi_vn", self.aqi_vn)
        bank.set("aqi_us", self.aqi_us)
        return good

    def _read_scd(self, now_ms, o, n):
        # Advance the SCD41 driver: a new measurement updates the readings and co2_high, a
        # missed interval counts the failure.
        scd = self.scd
        result = scd.poll(now_ms)
        if result == scd41.MISSED:
            self.errors += 1
            self._f_scd.update(True, n)
            return
        if result != scd41.NEW:
            return
        self._f_scd.update(False, n)
        co2 = scd.co2
        t_word = scd.t_word
        rh_word = scd.rh_word
        self._scd_t_stuck.update(now_ms, t_word)
        self._scd_rh_stuck.update(now_ms, rh_word)
        t = scd41.temperature(t_word)
        if co2 > o["co2_max"] or not o["t_min"] <= t <= o["t_max"]:
            self.errors += 1
            self._f_scd_phys.update(True, n)
            return
        self._f_scd_phys.update(False, n)
        self.co2 = co2
        self.temperature = t
        self.humidity = rh = scd41.humidity(rh_word)
        bank = self.bank
        bank.set("co2", co2)
        bank.set("temperature", t)
        bank.set("humidity", rh)
        self._a_co2 = above(self._a_co2, co2, bank.threshold("co2_alarm"),
                            bank.threshold("co2_hysteresis"))

    def _publish(self):
        self.alarm_bits = (self.abit("pm25_high", self._a_pm25)
                           | self.abit("pm10_high", self._a_pm10)
                           | self.abit("co2_high", self._a_co2)
                           | self.abit("aqi_high", self._a_aqi))
        stuck = self._pms_stuck.stuck or (self._scd_t_stuck.stuck and self._scd_rh_stuck.stuck)
        self.fault_bits = (self.fbit("pms_timeout", self._timed_out)
                           | self.fbit("pms_checksum", self._f_checksum.state)
                           | self.fbit("scd_fault", self._f_scd.state)
                           | self.fbit("stuck", stuck)
                           | self.fbit("out_of_physics",
                                       self._f_pms_phys.state or self._f_scd_phys.state))
