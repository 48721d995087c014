# Signal-conditioning pieces: median, EMA, regression rate of rise, hysteresis, debounce, stuck.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest

from app.filters import (
    Debounce, Median, StuckDetector, above, below, ticks_add, ticks_diff,
)
from app.trend import Ema, RateOfRise

approx = mptest.approx


def test_median_rejects_a_single_spike():
    m = Median(3)
    assert m.update(10) == 10
    m.update(10)
    assert m.update(99) == 10
    assert m.update(10) == 10
    m5 = Median(5)
    for v in (1, 2, 100, 101, 3):
        out = m5.update(v)
    assert out == 3


def test_ema():
    e = Ema(0.5)
    assert e.update(10) == 10
    assert e.update(20) == 15


def test_rate_of_rise_on_a_ramp_and_flat():
    r = RateOfRise(60000, 32, 10000)
    t = 0
    out = None
    for i in range(200):          # 100 s of 1 unit/s = 60 units/min, sampled every 500 ms
        out = r.update(t, i * 0.5)
        t += 500
    assert approx(out, 60.0, 0.5), out
    r2 = RateOfRise(60000, 32, 10000)
    assert r2.update(0, 5.0) is None  # not enough span yet
    for i in range(1, 100):
        out = r2.update(i * 500, 5.0)
    assert approx(out, 0.0, 1e-3), out


def test_rate_of_rise_ignores_sample_period_and_tick_wrap():
    r = RateOfRise(60000, 32, 10000)
    t = ticks_add(0, -20000)       # wraps during the run
    out = None
    for i in range(60):           # 2 s period, 0.1 unit/s = 6 units/min
        out = r.update(t, 0.2 * i)
        t = ticks_add(t, 2000)
    assert approx(out, 6.0, 0.05), out


def test_single_spike_moves_regression_little():
    r = RateOfRise(60000, 32, 10000)
    for i in range(120):
        v = 20.0 + (5.0 if i == 100 else 0.0)
        out = r.update(i * 500, v)
    assert abs(out) < 2.0, out


def test_hysteresis():
    a = False
    a = above(a, 4.0, 4.0, 0.5)
    assert not a                      # strictly above raises
    a = above(a, 4.01, 4.0, 0.5)
    assert a
    a = above(a, 3.6, 4.0, 0.5)
    assert a                          # within the hysteresis band: holds
    a = above(a, 3.5, 4.0, 0.5)
    assert not a
    b = below(False, 0.19, 0.2, 0.05)
    assert b
    assert below(b, 0.24, 0.2, 0.05)
    assert not below(b, 0.25, 0.2, 0.05)


def test_debounce():
    d = Debounce(3)
    assert not d.update(True)
    assert not d.update(True)
    assert d.update(True)
    assert d.update(False) and d.update(False)
    assert not d.update(False)
    assert d.update(True, 1)              # n given per call


def test_stuck_detector_needs_time_and_samples():
    s = StuckDetector(10000, 5)
    t = 0
    for _ in range(21):
        s.update(t, 1234)
        t += 500
    assert s.stuck                       # 10 s, 21 samples
    s.update(t, 1235)
    assert not s.stuck
    s2 = StuckDetector(10000, 5)
    for i in range(40):
        s2.update(i * 500, 1000 + (i & 1))
    assert not s2.stuck


def test_ticks_diff_wraps():
    t = ticks_add(0, -10)
    assert ticks_diff(ticks_add(t, 30), t) == 30


mptest.run(globals())
