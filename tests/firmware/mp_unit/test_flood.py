# Flood gauge driven through a fake HAL: stages, fast rise, loop faults, impossible jumps.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import Clock, FakeHal, loop_counts, loop_counts_for, run_for

from app.classes.flood import Flood
from app.regbank import RegBank, class_map

BITS = class_map("flood")["alarm_bits"]
FAULTS = class_map("flood")["fault_bits"]
SPAN = 5.0   # sensor_span default
approx = mptest.approx


def A(name):
    return 1 << BITS[name]


def F(name):
    return 1 << FAULTS[name]


def make(level=0.10):
    hal = FakeHal()
    hal.counts["level"] = loop_counts_for(level, SPAN)
    bank = RegBank("flood")
    flood = Flood(hal, bank)
    clock = Clock()
    run_for(flood, clock, 30)
    return hal, bank, flood, clock


def set_level(hal, level):
    hal.counts["level"] = loop_counts_for(level, SPAN)


def test_dry_gauge_reads_normal():
    _hal, bank, flood, _clock = make()
    assert flood.alarm_bits == 0 and flood.fault_bits == 0
    assert approx(bank.get("level"), 0.10, 0.01), bank.get("level")
    assert approx(bank.get("loop_current"), 4.32, 0.02), bank.get("loop_current")
    assert bank.get("flood_stage") == 0 and abs(bank.get("level_rate")) < 5


def test_stages_rise_and_fall_with_hysteresis():
    hal, bank, flood, clock = make(level=0.2)
    for level, stage in ((0.35, 1), (0.65, 2), (0.95, 2), (1.1, 3), (0.97, 3), (0.9, 2),
                         (0.57, 2), (0.5, 1), (0.2, 0)):
        set_level(hal, level)
        run_for(flood, clock, 3)
        assert bank.get("flood_stage") == stage, (level, stage, bank.get("flood_stage"))
    set_level(hal, 1.1)
    run_for(flood, clock, 3)
    assert flood.alarm_bits & (A("stage1") | A("stage2") | A("stage3")) == \
        A("stage1") | A("stage2") | A("stage3")


def test_fast_rise_alarm_on_rate_and_clears_when_water_stops():
    hal, bank, flood, clock = make(level=0.05)
    t0 = clock.now
    for _ in range(240):              # 60 cm/h for 2 minutes
        set_level(hal, 0.05 + (clock.now - t0) / 3600000.0 * 0.60)
        flood.sample(clock.tick())
    assert flood.alarm_bits & A("fast_rise"), flood.alarm_bits
    assert approx(bank.get("level_rate"), 60.0, 8.0), bank.get("level_rate")
    run_for(flood, clock, 90)         # level steady
    assert not flood.alarm_bits & A("fast_rise")
    assert abs(bank.get("level_rate")) < 10


def test_slow_rise_is_not_fast_rise():
    hal, _bank, flood, clock = make(level=0.05)
    t0 = clock.now
    for _ in range(240):              # 10 cm/h
        set_level(hal, 0.05 + (clock.now - t0) / 3600000.0 * 0.10)
        flood.sample(clock.tick())
    assert flood.alarm_bits == 0


def test_broken_wire_is_loop_open_not_a_level():
    hal, bank, flood, clock = make(level=1.2)
    assert bank.get("flood_stage") == 3
    hal.counts["level"] = 0
    run_for(flood, clock, 2)
    assert flood.fault_bits == F("loop_open")
    assert flood.alarm_bits == 0 and bank.get("flood_stage") == 0   # the fault wins
    set_level(hal, 0.1)
    run_for(flood, clock, 3)
    assert flood.fault_bits == 0


def test_over_current_fault():
    hal, _bank, flood, clock = make()
    hal.counts["level"] = loop_counts(22.5)
    run_for(flood, clock, 2)
    assert flood.fault_bits == F("loop_over") and flood.alarm_bits == 0


def test_single_level_step_is_rejected_once_and_no_fast_rise():
    hal, bank, flood, clock = make(level=0.1)
    before = flood.errors
    set_level(hal, 2.0)               # a 1.9 m step between two samples
    run_for(flood, clock, 30)
    assert flood.errors == before + 1
    assert flood.fault_bits == 0
    assert not flood.alarm_bits & A("fast_rise"), flood.alarm_bits
    assert bank.get("flood_stage") == 3


def test_flapping_level_is_out_of_physics():
    hal, _bank, flood, clock = make(level=0.1)
    for i in range(6):
        set_level(hal, 2.0 if i & 1 else 0.1)
        flood.sample(clock.tick())
    assert flood.fault_bits == F("out_of_physics"), flood.fault_bits
    assert flood.alarm_bits == 0


def test_span_from_holding_register():
    hal, bank, flood, clock = make()
    bank.set_holding("sensor_span", 10.0)
    hal.counts["level"] = loop_counts(12.0)
    run_for(flood, clock, 5)          # 2.5 m -> 5 m is one jump: rejected once, then accepted
    assert approx(bank.get("level"), 5.0, 0.02), bank.get("level")


def test_stuck_transducer():
    hal, _bank, flood, clock = make()
    hal.dither = False
    run_for(flood, clock, 130)
    assert flood.fault_bits == F("stuck")


mptest.run(globals())
