# Trend filters for the classes that watch how fast a signal moves (fire: rate-of-rise heat,
# flood: rising water): an exponential moving average and a least-squares rate-of-rise over a
# time window. Apart from app/filters.py so that the nodes that never use them (air, water)
# do not carry their bytecode in their heap.
#
# Runs on MicroPython (ESP32, unix port) and on CPython. Storage is allocated once, in
# __init__; times are ticks_ms values compared through ticks_diff() only.

from array import array

from app.filters import ticks_diff


class Ema:
    """Exponential moving average, value = value + alpha * (x - value); None until fed."""

    def __init__(self, alpha):
        self.alpha = alpha
        self.value = None

    def update(self, x):
        if self.value is None:
            self.value = x
        else:
            self.value += self.alpha * (x - self.value)
        return self.value

    def reset(self):
        self.value = None


class RateOfRise:
    """Slope of a signal over the last window_ms, in units per minute, by least squares.

    A regression slope over the whole window, not the difference of two samples, so one noisy
    sample moves the result by a fraction of its error rather than by all of it. Samples are
    gathered in `slots` buckets of window_ms / (slots - 1) each (the bucket keeps the sum of its
    samples' values and time offsets), so memory is fixed whatever the sample period, and every
    sample still counts: the fit is weighted by the number of samples in each bucket.

    update() returns None until the buffered samples span at least min_span_ms (a slope fitted
    over two samples would be noise) and after reset().
    """

    def __init__(self, window_ms=60000, slots=32, min_span_ms=None):
        self.window_ms = window_ms
        self.min_span_ms = window_ms // 4 if min_span_ms is None else min_span_ms
        self._spacing = window_ms // (slots - 1)
        self._slots = slots
        # ticks_ms of each bucket's first sample: a list, since the tick period is port-specific
        # (2**30 on ESP32, wider on the unix port) and would overflow an array("i"); small ints
        # in a list cost no allocation when assigned
        self._t0 = [0] * slots
        self._sum_dt = array("f", [0.0] * slots)  # sum of (sample time - t0), ms
        self._sum_v = array("f", [0.0] * slots)   # sum of values
        self._n = array("i", [0] * slots)         # samples in the bucket
        self._head = 0   # index of the newest bucket
        self._used = 0   # buckets in use (newest backwards)
        self._last_t = 0
        self.rate = None

    def reset(self):
        self._used = 0
        self.rate = None

    def update(self, now_ms, value):
        slots = self._slots
        head = self._head
        if self._used == 0 or ticks_diff(now_ms, self._t0[head]) >= self._spacing:
            head = (head + 1) % slots
            self._head = head
            self._t0[head] = now_ms
            self._sum_dt[head] = 0.0
            self._sum_v[head] = 0.0
            self._n[head] = 0
            if self._used < slots:
                self._used += 1
        self._sum_dt[head] += ticks_diff(now_ms, self._t0[head])
        self._sum_v[head] += value
        self._n[head] += 1
        self._last_t = now_ms
        # drop buckets that started before the window (oldest first)
        while self._used > 1:
            oldest = (head - self._used + 1) % slots
            if ticks_diff(now_ms, self._t0[oldest]) <= self.window_ms:
                break
            self._used -= 1
        self.rate = self._fit(now_ms)
        return self.rate

    def _fit(self, now_ms):
        slots = self._slots
        oldest = (self._head - self._used + 1) % slots
        if ticks_diff(now_ms, self._t0[oldest]) < self.min_span_ms:
            return None
        # weighted least squares on bucket means; x in seconds relative to now and y relative to
        # the oldest bucket (small numbers keep the device's single-precision floats accurate)
        sw = sx = sy = sxx = sxy = 0.0
        y0 = self._sum_v[oldest] / self._n[oldest] if self._n[oldest] else 0.0
        i = oldest
        for _ in range(self._used):
            n = self._n[i]
            if n:
                x = (ticks_diff(self._t0[i], now_ms) + self._sum_dt[i] / n) * 0.001
                y = self._sum_v[i] / n - y0
                sw += n
                sx += n * x
                sy += n * y
                sxx += n * x * x
                sxy += n * x * y
            i = (i + 1) % slots
        denom = sw * sxx - sx * sx
        if denom <= 0.0:
            return None
        return (sw * sxy - sx * sy) / denom * 60.0  # per second -> per minute
