# Water-quality station through a fake HAL: QCVN limits with hysteresis, probe faults win.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import (
    Clock, FakeHal, loop_counts_for, ph_counts, run_for, sensor, turbidity_counts,
)

from app.classes.water import Water
from app.regbank import RegBank, class_map

BITS = class_map("water")["alarm_bits"]
FAULTS = class_map("water")["fault_bits"]
W = sensor("water")
approx = mptest.approx


def A(name):
    return 1 << BITS[name]


def F(name):
    return 1 << FAULTS[name]


def make():
    hal = FakeHal()
    hal.counts["pressure"] = loop_counts_for(3.0, W["pressure_span"])
    hal.counts["ph"] = ph_counts(7.2)
    hal.counts["turbidity"] = turbidity_counts(0.8)
    hal.counts["chlorine"] = loop_counts_for(0.5, W["chlorine_span"])
    bank = RegBank("water")
    water = Water(hal, bank)
    clock = Clock()
    run_for(water, clock, 10)
    return hal, bank, water, clock


def test_good_water_reads_normal():
    _hal, bank, water, _clock = make()
    assert water.alarm_bits == 0 and water.fault_bits == 0
    assert approx(bank.get("pressure"), 3.0, 0.02)
    assert approx(bank.get("ph"), 7.2, 0.02)
    assert approx(bank.get("turbidity"), 0.8, 0.05)
    assert approx(bank.get("chlorine"), 0.5, 0.01)


def test_chlorine_low_raises_and_clears_above_hysteresis():
    hal, _bank, water, clock = make()
    hal.counts["chlorine"] = loop_counts_for(0.12, W["chlorine_span"])
    run_for(water, clock, 3)
    assert water.alarm_bits == A("chlorine_low")
    hal.counts["chlorine"] = loop_counts_for(0.22, W["chlorine_span"])  # inside hysteresis
    run_for(water, clock, 3)
    assert water.alarm_bits == A("chlorine_low")
    hal.counts["chlorine"] = loop_counts_for(0.30, W["chlorine_span"])
    run_for(water, clock, 3)
    assert water.alarm_bits == 0


def test_each_limit():
    cases = (
        ("pressure", loop_counts_for(0.5, W["pressure_span"]), "pressure_low"),
        ("pressure", loop_counts_for(7.0, W["pressure_span"]), "pressure_high"),
        ("ph", ph_counts(5.5), "ph_low"),
        ("ph", ph_counts(9.0), "ph_high"),
        ("turbidity", turbidity_counts(3.0), "turbidity_high"),
        ("chlorine", loop_counts_for(1.3, W["chlorine_span"]), "chlorine_high"),
    )
    for channel, counts, alarm in cases:
        hal, _bank, water, clock = make()
        hal.counts[channel] = counts
        run_for(water, clock, 3)
        assert water.alarm_bits == A(alarm), (alarm, water.alarm_bits)
        assert water.fault_bits == 0


def test_broken_chlorine_loop_is_a_fault_not_disinfection_failure():
    hal, _bank, water, clock = make()
    hal.counts["chlorine"] = 0           # decodes to -1.25 mg/L
    run_for(water, clock, 3)
    assert water.fault_bits == F("chlorine_loop"), water.fault_bits
    assert water.alarm_bits == 0
    assert water.value("chlorine") is None


def test_fault_clears_an_active_alarm():
    hal, _bank, water, clock = make()
    hal.counts["ph"] = ph_counts(5.0)
    run_for(water, clock, 3)
    assert water.alarm_bits == A("ph_low")
    hal.counts["ph"] = 4095              # amplifier at the rail
    run_for(water, clock, 3)
    assert water.fault_bits == F("ph_probe") and water.alarm_bits == 0


def test_ph_out_of_range_is_out_of_physics():
    hal, _bank, water, clock = make()
    hal.counts["ph"] = 200               # above the ADC floor (open) but pH > 14
    run_for(water, clock, 3)
    assert water.fault_bits == F("out_of_physics"), water.fault_bits
    assert water.alarm_bits == 0


def test_turbidity_clear_water_is_not_a_fault_but_either_rail_is():
    hal, bank, water, clock = make()
    hal.counts["turbidity"] = turbidity_counts(0.0)   # clear water: the 0.25 V live zero
    run_for(water, clock, 3)
    assert water.fault_bits == 0 and water.alarm_bits == 0
    assert approx(bank.get("turbidity"), 0.0, 0.05)
    hal.counts["turbidity"] = 4095
    run_for(water, clock, 3)
    assert water.fault_bits == F("turbidity_probe") and water.alarm_bits == 0


def test_an_open_turbidity_input_is_a_probe_fault_not_clear_water():
    # The cable to the turbidity sensor is cut: the ESP32 reads its converter floor (~0.13 V,
    # 157 counts), below the sensor's 0.25 V live zero. The old firmware read that as clear
    # water (only the upper rail was a fault) and never flagged the probe.
    hal, _bank, water, clock = make()
    for floor in (157, 0):
        hal.counts["turbidity"] = floor
        run_for(water, clock, 3)
        assert water.fault_bits == F("turbidity_probe"), (floor, water.fault_bits)
        assert water.value("turbidity") is None      # no "clear water" reading while open
        assert water.alarm_bits == 0
        hal.counts["turbidity"] = turbidity_counts(0.8)
        run_for(water, clock, 3)
        assert water.fault_bits == 0, water.fault_bits


def test_hysteresis_from_holding_registers():
    hal, bank, water, clock = make()
    bank.set_holding("pressure_hysteresis", 0.5)
    hal.counts["pressure"] = loop_counts_for(6.2, W["pressure_span"])
    run_for(water, clock, 3)
    assert water.alarm_bits == A("pressure_high")
    hal.counts["pressure"] = loop_counts_for(5.7, W["pressure_span"])
    run_for(water, clock, 3)
    assert water.alarm_bits == A("pressure_high")
    hal.counts["pressure"] = loop_counts_for(5.4, W["pressure_span"])
    run_for(water, clock, 3)
    assert water.alarm_bits == 0


mptest.run(globals())
