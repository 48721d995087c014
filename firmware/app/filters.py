# Small signal-conditioning pieces shared by the sensor classes: a median filter, hysteresis
# comparators, a fault debouncer and a stuck-sensor detector. The trend filters (an EMA, the
# regression rate-of-rise) are in app/trend.py: only the fire and flood nodes load them.
#
# Runs on MicroPython (ESP32, unix port) and on CPython. Every object allocates its storage once,
# in __init__; update() does arithmetic on pre-allocated arrays and allocates nothing but the
# floats it returns. Times are ticks_ms values and are only ever compared through ticks_diff(),
# so the 2**30 wrap of MicroPython's tick counter is harmless.

from array import array

try:
    from time import ticks_add, ticks_diff
except ImportError:  # CPython: same semantics as MicroPython (ticks wrap at 2**30)
    _TICKS_PERIOD = 1 << 30
    _TICKS_HALF = 1 << 29

    def ticks_diff(a, b):
        return ((a - b + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF

    def ticks_add(a, delta):
        return (a + delta) & (_TICKS_PERIOD - 1)


# -- comparators ------------------------------------------------------------------------------
# An alarm is raised when the value goes strictly beyond the threshold and cleared only once it
# has come back by the hysteresis: above() is active for value > threshold and stays active
# while value > threshold - hysteresis. below() mirrors it. With hysteresis 0 the alarm is
# exactly "value > threshold" (resp. "value < threshold"), so a limit such as pH 6.0..8.5 is an
# allowed, inclusive range.

def above(active, value, threshold, hysteresis):
    """New state of a high alarm (active: its current state)."""
    if active:
        return value > threshold - hysteresis
    return value > threshold


def below(active, value, threshold, hysteresis):
    """New state of a low alarm (active: its current state)."""
    if active:
        return value < threshold + hysteresis
    return value < threshold


class Debounce:
    """A boolean that changes only after n consecutive samples disagree with it.

    Used for fault bits (n = the fault_debounce holding register, read at every sample, so it is
    passed to update() rather than fixed here) and to confirm rate alarms.
    """

    def __init__(self, n=3):
        self.n = n
        self.state = False
        self._count = 0  # consecutive samples contradicting self.state

    def update(self, bad, n=None):
        if n is None:
            n = self.n
        if n < 1:
            n = 1
        if bool(bad) == self.state:
            self._count = 0
        else:
            self._count += 1
            if self._count >= n:
                self.state = not self.state
                self._count = 0
        return self.state

    def reset(self):
        self.state = False
        self._count = 0


# -- filters ----------------------------------------------------------------------------------

class Median:
    """Running median over the last n samples (n odd, 3 or 5 in practice).

    Rejects single spikes (n = 3) or two in a row (n = 5) without the lag of an average. Until
    n samples have arrived it returns the median of those it has.
    """

    def __init__(self, n=5):
        self._n = n
        self._ring = array("f", [0.0] * n)
        self._sorted = array("f", [0.0] * n)  # scratch for the sort, reused
        self._next = 0
        self._count = 0

    def reset(self):
        self._next = 0
        self._count = 0

    def update(self, x):
        ring = self._ring
        ring[self._next] = x
        self._next = (self._next + 1) % self._n
        if self._count < self._n:
            self._count += 1
        # insertion sort of at most 5 elements into the scratch array: no allocation
        s = self._sorted
        count = self._count
        for i in range(count):
            v = ring[i]
            j = i
            while j > 0 and s[j - 1] > v:
                s[j] = s[j - 1]
                j -= 1
            s[j] = v
        if count & 1:
            return s[count >> 1]
        return (s[(count >> 1) - 1] + s[count >> 1]) * 0.5


class StuckDetector:
    """True when a raw reading has not changed at all for hold_ms and at least min_samples.

    Real front-ends always carry a count or two of noise; a reading that is bit-for-bit constant
    for minutes is a frozen ADC, a dead converter or firmware reading a stale buffer. Compare raw
    values (ADC counts, sensor words), never filtered ones.
    """

    def __init__(self, hold_ms=120000, min_samples=20):
        self.hold_ms = hold_ms
        self.min_samples = min_samples
        self._value = None
        self._since = 0
        self._count = 0
        self.stuck = False

    def reset(self):
        self._value = None
        self.stuck = False

    def update(self, now_ms, raw):
        if raw != self._value or self._value is None:
            self._value = raw
            self._since = now_ms
            self._count = 1
            self.stuck = False
        else:
            self._count += 1
            self.stuck = (self._count >= self.min_samples
                          and ticks_diff(now_ms, self._since) >= self.hold_ms)
        return self.stuck
