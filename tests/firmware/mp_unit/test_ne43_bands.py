# NAMUR NE 43 bands on the device's interpreter: inclusive fault bands (<= 3.6 mA, >= 21.0 mA),
# exactly at the edges, and the 100 Ω shunt that keeps 3.6-21 mA in the ESP32 ADC's linear
# window (0.15-2.45 V at 11 dB; Espressif ESP-IDF ADC guide).
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import loop_counts, sensor

from app.drivers import analog


def test_low_edge_is_a_fault_and_just_above_is_not():
    assert analog.loop_state(3.6) == analog.OPEN
    assert analog.loop_state(3.5999) == analog.OPEN
    assert analog.loop_state(3.6001) == analog.OK


def test_high_edge_is_a_fault_and_just_below_is_not():
    assert analog.loop_state(21.0) == analog.SHORT
    assert analog.loop_state(21.0001) == analog.SHORT
    assert analog.loop_state(20.9999) == analog.OK


def test_saturated_transmitter_is_a_reading():
    assert analog.loop_state(3.8) == analog.OK
    assert analog.loop_state(20.5) == analog.OK


def test_shunt_keeps_the_namur_range_in_the_linear_window():
    shunt = sensor("loop")["shunt_ohms"]
    assert 0.15 <= 3.6e-3 * shunt and 21.0e-3 * shunt <= 2.45, shunt


def test_counts_round_trip_at_4_and_20_ma():
    assert mptest.approx(analog.loop_ma(loop_counts(4.0)), 4.0, 0.005)
    assert mptest.approx(analog.loop_ma(loop_counts(20.0)), 20.0, 0.005)


mptest.run(globals())
