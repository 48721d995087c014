# Water-quality station: network pressure (4-20 mA), pH (glass electrode + amplifier),
# turbidity (optical, 0.25 V live zero), free residual chlorine (4-20 mA). Limits per QCVN 01-1:2018/BYT
# come from the holding registers (water.toml): low/high alarms with a hysteresis each.
#
# The four probes are declared once in _PROBES and handled by one loop. Each reading goes
# through a 5-sample median before its comparators.
#
# Fault policy (fault wins): while a probe's electrical fault (loop outside 3.6..21 mA, amplifier
# output at a rail) or out-of-physics fault is being debounced its alarms hold their state;
# once the fault is confirmed its alarms are CLEARED and stay suppressed until the probe reads
# valid again. The gateway sees the fault bit instead: a disconnected chlorine loop reads
# -1.25 mg/L and must not be reported as "disinfection failing", it is a maintenance call.
#
# Turbidity: the sensor's output is level-shifted to a 0.25 V live zero (sensors.toml
# turbidity_offset_v: 0.25 V at 0 NTU, 2.25 V at 100 NTU), above the ESP32 converter's
# floor, so clear water reads ~310 counts and an open input (the floor, at or below
# adc.open_counts) is told apart from it: both rails are probe faults, as for pH.

from app.classes._base import SensorClass, options
from app.drivers import analog, water_probes
from app.filters import Debounce, Median, StuckDetector, above, below
from app.sensors import water as _W


_LOOP = 0        # 4-20 mA, span from sensors.toml
_PH = 1          # amplifier output, both rails are faults
_TURBIDITY = 2   # live zero 0.25 V: both rails are faults (open input, shorted output)

# (register name, ADC channel, kind, span, fault bit, low alarm, high alarm, hysteresis).
# The low/high alarm names are both the holding register with the limit and the alarm bit.
_PROBES = (
    ("pressure", _W.pressure_channel, _LOOP, _W.pressure_span, "pressure_loop",
     "pressure_low", "pressure_high", "pressure_hysteresis"),
    ("ph", _W.ph_channel, _PH, None, "ph_probe", "ph_low", "ph_high", "ph_hysteresis"),
    ("turbidity", _W.turbidity_channel, _TURBIDITY, None, "turbidity_probe",
     None, "turbidity_high", "turbidity_hysteresis"),
    ("chlorine", _W.chlorine_channel, _LOOP, _W.chlorine_span, "chlorine_loop",
     "chlorine_low", "chlorine_high", "chlorine_hysteresis"),
)

DEFAULTS = {
    "median": 5,
    "ph_min": 0.0,     # outside 0..14: out of physics (the amplifier can output it, water can't)
    "ph_max": 14.0,
    "stuck_hold_ms": 120000,
    "stuck_min_samples": 20,
}


class _Probe:
    # Per-probe state; four of these, allocated once.
    def __init__(self, o):
        self.med = Median(o["median"])
        self.stuck = StuckDetector(o["stuck_hold_ms"], o["stuck_min_samples"])
        self.fault = Debounce()
        self.phys = Debounce()
        self.low = False
        self.high = False
        self.value = None   # filtered engineering value, None while faulted


class Water(SensorClass):
    name = "water"

    def __init__(self, hal, bank, config=None):
        SensorClass.__init__(self, hal, bank)
        self.opts = o = options(DEFAULTS, config)
        self._probes = [_Probe(o) for _ in _PROBES]

    def reset(self):
        # Nothing latches; re-arm every comparator.
        for p in self._probes:
            p.low = p.high = False
        self._publish()

    def value(self, name):
        """Filtered value of a probe ("pressure", "ph", ...), None while faulted/unknown."""
        for i in range(len(_PROBES)):
            if _PROBES[i][0] == name:
                return self._probes[i].value
        raise KeyError(name)

    def _decode(self, kind, span, counts):
        # -> (value, electrically_bad, physically_bad)
        o = self.opts
        if kind == _LOOP:
            ma = analog.loop_ma(counts)
            return analog.loop_value(ma, span), analog.loop_state(ma) != analog.OK, False
        if kind == _PH:
            v = water_probes.ph(counts)
            bad = analog.rail(counts) != analog.OK
            return v, bad, not bad and not o["ph_min"] <= v <= o["ph_max"]
        v = water_probes.turbidity_ntu(counts)
        return v, analog.rail(counts) != analog.OK, False

    def _sample(self, now_ms):
        bank = self.bank
        n = int(bank.threshold("fault_debounce"))
        for i in range(len(_PROBES)):
            name, channel, kind, span, _fault, low_name, high_name, hyst_name = _PROBES[i]
            p = self._probes[i]
            counts = self.adc(channel)
            if counts is None:
                value, elec_bad, phys_bad = None, True, False
            else:
                value, elec_bad, phys_bad = self._decode(kind, span, counts)
                bank.set(name + "_raw", counts)
                bank.set(name, value)
                p.stuck.update(now_ms, counts)
                if elec_bad or phys_bad:
                    self.errors += 1
            faulted = p.fault.update(elec_bad, n)
            faulted = p.phys.update(phys_bad, n) or faulted
            if faulted:
                p.low = p.high = False   # fault wins
                p.med.reset()
                p.value = None
            elif not (elec_bad or phys_bad):
                p.value = v = p.med.update(value)
                hyst = bank.threshold(hyst_name)
                if low_name is not None:
                    p.low = below(p.low, v, bank.threshold(low_name), hyst)
                p.high = above(p.high, v, bank.threshold(high_name), hyst)
        self._publish()

    def _publish(self):
        alarms = 0
        faults = 0
        stuck = phys = False
        for i in range(len(_PROBES)):
            spec = _PROBES[i]
            p = self._probes[i]
            if spec[5] is not None:
                alarms |= self.abit(spec[5], p.low)
            alarms |= self.abit(spec[6], p.high)
            faults |= self.fbit(spec[4], p.fault.state)
            stuck = stuck or p.stuck.stuck
            phys = phys or p.phys.state
        self.alarm_bits = alarms
        self.fault_bits = faults | self.fbit("stuck", stuck) | self.fbit("out_of_physics", phys)
