"""The ESP32 ADC as the simulator models it, and the 4-20 mA front-end that has to live with it.

The simulator feeds the firmware what an ESP32's calibrated ``read_uv()`` gives at 11 dB, not an
ideal converter (hardware/sim/encoders.py cites the curve). These tests hold the front-end
choice to it: the whole NAMUR NE 43 range (3.6-21 mA) must sit in Espressif's accurate window
(0.15-2.45 V), and the real firmware decoder (app.drivers.analog, imported from firmware/) must
read the simulated loop right and classify it by the NE 43 bands. With the old 150 Ω shunt a
healthy 20 mA loop sat at 3.0 V, read 21.1 mA and was reported as a loop fault.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hardware.sim import encoders as enc

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from app.drivers import analog  # noqa: E402

LOW_V, HIGH_V = enc.ESP32_LINEAR_V


def esp32_reading(ma: float) -> int:
    """The counts the firmware's ESP32 HAL reports for a loop current (read_uv, rounded)."""
    return round(enc.esp32_counts_exact(enc.loop_volts(ma)))


# --------------------------------------------------------------------------- the converter


@pytest.mark.parametrize("volts", [0.2, 0.5, 1.0, 1.65, 2.0, 2.4])
def test_calibrated_reading_is_true_inside_the_linear_window(volts: float) -> None:
    assert enc.esp32_read_uv(volts) / 1e6 == pytest.approx(volts, abs=0.004)


def test_calibrated_reading_over_reads_above_2v5_and_saturates() -> None:
    assert enc.esp32_read_uv(3.0) / 1e6 > 3.1           # the code runs ahead of the line
    assert enc.esp32_raw_code(3.2) == 4095
    assert enc.esp32_read_uv(3.2) == enc.esp32_read_uv(3.3)   # saturated: no information


def test_zero_volts_reads_the_converter_offset_not_zero() -> None:
    assert enc.esp32_raw_code(0.0) == 0
    assert enc.esp32_read_uv(0.0) / 1e6 == pytest.approx(enc.ESP32_CAL_B)
    floor = round(enc.esp32_counts_exact(0.0))
    assert floor > 100                         # an ideal converter would say 0
    assert floor <= analog.OPEN_COUNTS         # and the firmware still calls it open


# --------------------------------------------------------------------------- the loop front-end


@pytest.mark.parametrize("ma", [3.6, 3.8, 4.0, 12.0, 20.0, 20.5, 21.0])
def test_the_whole_namur_range_sits_in_the_adc_linear_window(ma: float) -> None:
    assert LOW_V <= enc.loop_volts(ma) <= HIGH_V, (
        f"{ma} mA across {enc.FRONT_END.shunt_ohms} Ω is {enc.loop_volts(ma):.3f} V, outside "
        f"the ESP32's accurate {LOW_V}-{HIGH_V} V at 11 dB")


@pytest.mark.parametrize("ma", [4.0, 8.0, 12.0, 16.0, 20.0])
def test_firmware_reads_the_simulated_loop_within_a_twentieth_of_a_milliamp(ma: float) -> None:
    got = analog.loop_ma(esp32_reading(ma))
    assert got == pytest.approx(ma, abs=0.05)
    assert analog.loop_state(got) == analog.OK


@pytest.mark.parametrize(("ma", "state"), [
    (0.0, analog.OPEN),      # a cut loop
    (3.4, analog.OPEN),      # NE 43 sensor fault, low
    (3.8, analog.OK),        # transmitter saturated low: a reading, not a fault
    (20.5, analog.OK),       # saturated high
    (21.5, analog.SHORT),    # NE 43 sensor fault, high
    (23.0, analog.SHORT),
])
def test_ne43_band_of_a_simulated_loop(ma: float, state: int) -> None:
    assert analog.loop_state(analog.loop_ma(esp32_reading(ma))) == state


@pytest.mark.parametrize(("ma", "state"), [
    (3.6, analog.OPEN),
    (3.6001, analog.OK),
    (20.9999, analog.OK),
    (21.0, analog.SHORT),
])
def test_ne43_band_edges_are_inclusive(ma: float, state: int) -> None:
    assert analog.loop_state(ma) == state
