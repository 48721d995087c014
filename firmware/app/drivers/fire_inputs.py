# The fire node's analog front-ends: the photoelectric smoke chamber and the NTC heat sensor,
# counts to %/m and °C (formulas in app/drivers/analog.py's header). A module of its own so the
# other classes do not carry it; constants from hardware/sensors.toml via app.sensors.
#
# Runs on MicroPython and CPython.

import math

from app.drivers.analog import FULL_SCALE
from app.sensors import heat as _HEAT
from app.sensors import smoke as _SMOKE

_T25_K = 298.15
_KELVIN = 273.15


# -- smoke ------------------------------------------------------------------------------------

def smoke_pct_m(counts):
    """Photoelectric chamber: counts = clean_counts + obscuration * counts_per_pct_m.

    Returns obscuration in %/m; negative below the clean-air level (a failing LED or a dirty
    chamber compensation, which the fire class treats as a fault when it is far below)."""
    return (counts - _SMOKE.clean_counts) / _SMOKE.counts_per_pct_m


# -- NTC thermistor ---------------------------------------------------------------------------

def ntc_ohms(counts):
    """Thermistor resistance from the divider: NTC from vref to the ADC node, r_fixed to ground,
    V = vref * r_fixed / (r_ntc + r_fixed)  =>  r_ntc = r_fixed * (4095 - counts) / counts.

    Counts are clamped to 1..4094 so the result is always finite; an input that far out is
    flagged open/short by rail() long before."""
    if counts < 1:
        counts = 1
    elif counts > FULL_SCALE - 1:
        counts = FULL_SCALE - 1
    return _HEAT.r_fixed * (FULL_SCALE - counts) / counts


def ntc_celsius(counts):
    """Thermistor temperature in °C from the Beta equation:
    1/T = 1/T25 + ln(R/R25)/beta, T in kelvin, T25 = 298.15 K."""
    r = ntc_ohms(counts)
    inv_t = 1.0 / _T25_K + math.log(r / _HEAT.r25) / _HEAT.beta
    return 1.0 / inv_t - _KELVIN
