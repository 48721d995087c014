# What every device class shares: the never-raise sample() wrapper, the error counter, HAL reads
# that turn an exception into "no reading", and the bit tables from the class map.
#
# Conventions every class follows (the gateway and the fire-safety staff rely on them):
# - Thresholds and hysteresis are read from the bank at every sample: the gateway may change
#   them at any time.
# - A sample that is electrically impossible (open/short input, loop outside 3.6..21 mA) or
#   physically impossible (out_of_physics) is never fed to the filters nor to an alarm: the
#   channel's alarms hold their state while the fault is being debounced.
# - Once a channel's fault is confirmed (fault_debounce consecutive bad samples) the fault bit is
#   set and the channel's non-latched alarms are cleared: the fault wins, a broken probe cannot
#   claim a reading. Latched fire alarms stay latched until reset().
# - A stuck reading (bit-for-bit constant for minutes) sets the stuck fault bit but does not
#   suppress alarms: the value may still be true, and suppressing a real alarm on a heuristic is
#   the worse error.
# - The engineering input registers always hold the value decoded from the latest raw reading,
#   faulted or not; the fault bits say whether it can be trusted.

from app.regbank import class_map


def options(defaults, overrides):
    """The class defaults dict, with per-device overrides applied. Without overrides it is the
    defaults dict itself (read-only by convention: no copy of it on a small heap); with them, a
    new dict."""
    if not overrides:
        return defaults
    out = dict(defaults)
    for k in overrides:
        if k not in out:
            raise KeyError(k)
        out[k] = overrides[k]
    return out


class SensorClass:
    name = None          # "fire", "flood", ... set by the subclass
    latched = False      # True while a latched alarm waits for reset (fire only)
    errors = 0           # failed sensor reads: checksum, timeout, NACK, out of range
    internal_errors = 0  # exceptions caught by sample() (a bug: counted, never raised)

    def __init__(self, hal, bank):
        self.hal = hal
        self.bank = bank
        spec = class_map(self.name)
        self._abit = spec["alarm_bits"]   # name -> bit number
        self._fbit = spec["fault_bits"]
        self.alarm_bits = 0
        self.fault_bits = 0

    def sample(self, now_ms):
        # The node's main loop must survive anything a sensor does: a bug or a HAL surprise is
        # counted and the previous alarm/fault bits stay as they were.
        try:
            self._sample(now_ms)
        except Exception:  # noqa: BLE001 - by contract sample() never raises
            self.errors += 1
            self.internal_errors += 1

    def _sample(self, now_ms):
        raise NotImplementedError

    def reset(self):
        pass

    def period_ms(self, period):
        """The wait before the next sample, given the configured sample_period (ms). A class
        may shorten it while it confirms a suspect reading (fire); never longer."""
        return period

    def adc(self, channel):
        """ADC counts of channel, or None (and errors += 1) when the HAL fails."""
        try:
            return int(self.hal.adc(channel))
        except Exception:  # noqa: BLE001
            self.errors += 1
            return None

    def abit(self, name, on):
        return (1 << self._abit[name]) if on else 0

    def fbit(self, name, on):
        return (1 << self._fbit[name]) if on else 0
