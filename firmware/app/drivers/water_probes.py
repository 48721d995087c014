# The water node's probe front-ends: pH (glass electrode behind an amplifier) and optical
# turbidity, counts to pH and NTU (formulas in app/drivers/analog.py's header). A module of its
# own so the other classes do not carry it; constants from hardware/sensors.toml via app.sensors.
#
# Runs on MicroPython and CPython.

from app.drivers.analog import volts
from app.sensors import water as _WATER

# -- water-quality probes ---------------------------------------------------------------------

_PH_V_PER_UNIT = _WATER.ph_slope_v * _WATER.ph_gain


def ph(counts):
    """Glass electrode through a non-inverting x ph_gain amplifier with a ph_offset_v offset.

    Sign convention (Nernst, electrode positive in acid):
        V = ph_offset_v + (7 - pH) * ph_slope_v * ph_gain
        pH = 7 - (V - ph_offset_v) / (ph_slope_v * ph_gain)
    so pH 7 is 1.65 V, pH 4 is 2.182 V, pH 10 is 1.118 V; pH 0..14 spans 2.892..0.408 V."""
    return 7.0 - (volts(counts) - _WATER.ph_offset_v) / _PH_V_PER_UNIT


def turbidity_ntu(counts):
    """Optical turbidity sensor behind a level shift, linear:
    V = turbidity_offset_v + NTU * turbidity_v_per_ntu (0.25-2.25 V = 0-100 NTU), so clear
    water sits above the ESP32 ADC's 0.15 V floor; an open input decodes far below 0 NTU."""
    return (volts(counts) - _WATER.turbidity_offset_v) / _WATER.turbidity_v_per_ntu
