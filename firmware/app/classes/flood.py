# Flood gauge: water level from a 4-20 mA pressure transducer (4 mA = 0 m, 20 mA = sensor_span
# m), three alert stages with hysteresis, and a fast-rise alarm on the rate of rise.
#
# Level: 5-sample median of the level decoded from the loop current. Rate: least-squares slope
# of the filtered level over the last 60 s, in cm/h; the fast-rise alarm needs it above
# rise_alarm for rise_confirm consecutive samples and clears rise_hysteresis_frac below it.
# flood_stage is the highest active stage; the stage bits are independent (stage 3 active
# means stage 1 and 2 are active too, unless the thresholds were set out of order).
#
# Faults: loop_open (< 3.6 mA: broken wire, dead transducer), loop_over (> 21 mA), stuck raw
# counts, out_of_physics: the level jumped more than jump_m (+ jump_m_per_min for long sample
# periods) since the previous reading. Water does not do that; a loose connection does. The
# jumping sample is discarded and the rate window restarted (a step would otherwise read as a
# fast rise for a minute); a single jump only counts an error, a level that keeps jumping for
# fault_debounce samples becomes the out_of_physics fault. A confirmed fault clears the stage
# and fast-rise alarms (the fault wins: a broken gauge cannot claim a level).

from app.classes._base import SensorClass, options
from app.drivers import analog
from app.filters import Debounce, Median, StuckDetector, above, ticks_diff
from app.sensors import flood as _flood
from app.trend import RateOfRise

_LEVEL_CH = _flood.adc_channel
_M_PER_MIN_TO_CM_PER_H = 6000.0

DEFAULTS = {
    "level_median": 5,
    "rise_window_ms": 60000,       # rate-of-rise regression window
    "rise_min_span_ms": 50000,     # no rate until this much history: over shorter spans gauge
                                   # noise (±1 cm) alone reads as 30-40 cm/h, a false fast rise
    "rise_confirm": 2,             # consecutive samples above rise_alarm
    "rise_hysteresis_frac": 0.2,   # fast-rise clears below (1 - frac) * rise_alarm
    "jump_m": 0.5,                 # allowed change between consecutive samples...
    "jump_m_per_min": 0.5,         # ... plus this much per minute between them
    "stuck_hold_ms": 120000,
    "stuck_min_samples": 20,
}

_STAGES = ("stage1", "stage2", "stage3")  # holding register = alarm bit name


class Flood(SensorClass):
    name = "flood"

    def __init__(self, hal, bank, config=None):
        SensorClass.__init__(self, hal, bank)
        self.opts = o = options(DEFAULTS, config)
        self._med = Median(o["level_median"])
        self._ror = RateOfRise(o["rise_window_ms"], 32, o["rise_min_span_ms"])
        self._stuck = StuckDetector(o["stuck_hold_ms"], o["stuck_min_samples"])
        self._f_open = Debounce()
        self._f_over = Debounce()
        self._f_phys = Debounce()
        self._stage = [False, False, False]
        self._rise_live = False
        self._rise = Debounce(o["rise_confirm"])
        self._prev_level = None   # previous unfiltered level, for the jump check
        self._prev_t = 0
        self.level = None         # filtered level, m
        self.rate = None          # cm/h

    def reset(self):
        # Nothing latches on a flood gauge; a reset re-arms the comparators.
        self._stage[0] = self._stage[1] = self._stage[2] = False
        self._rise_live = False
        self._rise.reset()
        self._publish()

    def _clear_alarms(self):
        self._stage[0] = self._stage[1] = self._stage[2] = False
        self._rise_live = False
        self._rise.reset()

    def _sample(self, now_ms):
        bank = self.bank
        o = self.opts
        n = int(bank.threshold("fault_debounce"))
        span = bank.threshold("sensor_span")

        counts = self.adc(_LEVEL_CH)
        jump = False
        if counts is None:
            state = analog.OPEN
            level = None
        else:
            ma = analog.loop_ma(counts)
            state = analog.loop_state(ma)
            level = analog.loop_value(ma, span)
            bank.set("level_raw", counts)
            bank.set("loop_current", ma)
            bank.set("level", level)
            self._stuck.update(now_ms, counts)
            if state == analog.OK:
                prev = self._prev_level
                if prev is not None:
                    dt_min = ticks_diff(now_ms, self._prev_t) / 60000.0
                    if dt_min < 0:
                        dt_min = 0.0
                    step = level - prev
                    if step < 0:
                        step = -step
                    jump = step > o["jump_m"] + o["jump_m_per_min"] * dt_min
                self._prev_level = level
                self._prev_t = now_ms
                if jump:   # discontinuity: restart the filters from the new level
                    self._med.reset()
                    self._ror.reset()
            else:
                self._prev_level = None
            if state != analog.OK or jump:
                self.errors += 1

        f_open = self._f_open.update(state == analog.OPEN, n)
        f_over = self._f_over.update(state == analog.SHORT, n)
        f_phys = self._f_phys.update(jump, n)
        if f_open or f_over or f_phys:
            self._clear_alarms()
            self._med.reset()
            self._ror.reset()
            self.level = self.rate = None
        elif state == analog.OK and not jump:
            self.level = lv = self._med.update(level)
            hyst = bank.threshold("level_hysteresis")
            for i in range(3):
                self._stage[i] = above(self._stage[i], lv, bank.threshold(_STAGES[i]), hyst)
            r = self._ror.update(now_ms, lv)
            self.rate = None if r is None else r * _M_PER_MIN_TO_CM_PER_H
            th = bank.threshold("rise_alarm")
            self._rise_live = self.rate is not None and above(
                self._rise_live, self.rate, th, th * o["rise_hysteresis_frac"])
            self._rise.update(self._rise_live, o["rise_confirm"])
        bank.set("level_rate", self.rate or 0.0)

        self.fault_bits = (self.fbit("loop_open", f_open) | self.fbit("loop_over", f_over)
                           | self.fbit("stuck", self._stuck.stuck)
                           | self.fbit("out_of_physics", f_phys))
        self._publish()

    def _publish(self):
        st = self._stage
        self.alarm_bits = (self.abit("stage1", st[0]) | self.abit("stage2", st[1])
                           | self.abit("stage3", st[2]) | self.abit("fast_rise", self._rise.state))
        stage = 0
        for i in range(3):
            if st[i]:
                stage = i + 1
        self.bank.set("flood_stage", stage)
