# Analog front-ends: 12-bit ADC counts to engineering values, and the electrical fault checks
# (open input, shorted input, 4-20 mA loop out of the NAMUR NE 43 band).
#
# Every constant comes from hardware/sensors.toml through the generated app.hwdef; nothing
# electrical is typed here. "Counts" are the HAL's calibrated reading on a 0..vref = 0..4095
# scale: on an ESP32 the HAL reads machine.ADC.read_uv() (factory-calibrated microvolts) and
# scales it, never the raw read_u16() code, which is off by ~0.13 V and nonlinear. The
# calibrated reading is only accurate from 0.15 V to 2.45 V (11 dB attenuation), so every
# front-end keeps its working range inside that window (the loop shunt is 100 Ω: 21 mA = 2.1 V).
# The simulator's ideal encoders are the exact inverses of these functions (its feed adds the
# ESP32 transfer curve on top), so the formulas are spelled out in each docstring:
#
#   volts      V      = counts * vref / (2**bits - 1)                (4095 counts = vref = 3.3 V)
#   smoke      %/m    = (counts - clean_counts) / counts_per_pct_m
#   NTC        V      = vref * r_fixed / (r_ntc + r_fixed)             (NTC on top, to vref)
#              r_ntc  = r_fixed * (FS - counts) / counts               (FS = 4095)
#              T [K]  = 1 / (1/298.15 + ln(r_ntc / r25) / beta)
#   4-20 mA    mA     = V / shunt_ohms * 1000
#              value  = (mA - 4) / 16 * span
#   pH         V      = ph_offset_v + (7 - pH) * ph_slope_v * ph_gain  (acid -> higher voltage)
#              pH     = 7 - (V - ph_offset_v) / (ph_slope_v * ph_gain)
#   turbidity  NTU    = (V - turbidity_offset_v) / turbidity_v_per_ntu
#
# Runs on MicroPython and CPython.

import math

from app import hwdef

_ADC = hwdef.SENSORS["adc"]
_SMOKE = hwdef.SENSORS["smoke"]
_HEAT = hwdef.SENSORS["heat"]
_LOOP = hwdef.SENSORS["loop"]
_WATER = hwdef.SENSORS["water"]

FULL_SCALE = (1 << _ADC["bits"]) - 1   # counts at vref
VREF = _ADC["vref"]
OPEN_COUNTS = _ADC["open_counts"]      # at or below: wire cut
SHORT_COUNTS = _ADC["short_counts"]    # at or above: shorted to the rail

LOOP_OPEN_MA = _LOOP["open_ma"]
LOOP_OVER_MA = _LOOP["over_ma"]

_T25_K = 298.15
_KELVIN = 273.15

# Rail states returned by rail() and loop_state()
OK = 0
OPEN = 1   # input open / loop current too low
SHORT = 2  # input shorted / loop current too high


def volts(counts):
    """ADC counts -> volts at the pin: V = counts * vref / 4095."""
    return counts * VREF / FULL_SCALE


def rail(counts):
    """OPEN when counts <= adc.open_counts, SHORT when counts >= adc.short_counts, else OK."""
    if counts <= OPEN_COUNTS:
        return OPEN
    if counts >= SHORT_COUNTS:
        return SHORT
    return OK


# -- smoke ------------------------------------------------------------------------------------

def smoke_pct_m(counts):
    """Photoelectric chamber: counts = clean_counts + obscuration * counts_per_pct_m.

    Returns obscuration in %/m; negative below the clean-air level (a failing LED or a dirty
    chamber compensation, which the fire class treats as a fault when it is far below)."""
    return (counts - _SMOKE["clean_counts"]) / _SMOKE["counts_per_pct_m"]


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
    return _HEAT["r_fixed"] * (FULL_SCALE - counts) / counts


def ntc_celsius(counts):
    """Thermistor temperature in °C from the Beta equation:
    1/T = 1/T25 + ln(R/R25)/beta, T in kelvin, T25 = 298.15 K."""
    r = ntc_ohms(counts)
    inv_t = 1.0 / _T25_K + math.log(r / _HEAT["r25"]) / _HEAT["beta"]
    return 1.0 / inv_t - _KELVIN


# -- 4-20 mA loops ----------------------------------------------------------------------------

def loop_ma(counts):
    """Loop current across the shunt: mA = volts(counts) / shunt_ohms * 1000."""
    return volts(counts) * 1000.0 / _LOOP["shunt_ohms"]


def loop_state(ma):
    """NAMUR NE 43, bands inclusive: OPEN at or below loop.open_ma (3.6 mA), SHORT at or above
    loop.over_ma (21.0 mA); OK strictly between."""
    if ma <= LOOP_OPEN_MA:
        return OPEN
    if ma >= LOOP_OVER_MA:
        return SHORT
    return OK


def loop_value(ma, span):
    """Live-zero scaling: 4 mA -> 0, 20 mA -> span (linear, not clamped)."""
    return (ma - 4.0) * span / 16.0


# -- water-quality probes ---------------------------------------------------------------------

_PH_V_PER_UNIT = _WATER["ph_slope_v"] * _WATER["ph_gain"]


def ph(counts):
    """Glass electrode through a non-inverting x ph_gain amplifier with a ph_offset_v offset.

    Sign convention (Nernst, electrode positive in acid):
        V = ph_offset_v + (7 - pH) * ph_slope_v * ph_gain
        pH = 7 - (V - ph_offset_v) / (ph_slope_v * ph_gain)
    so pH 7 is 1.65 V, pH 4 is 2.182 V, pH 10 is 1.118 V; pH 0..14 spans 2.892..0.408 V."""
    return 7.0 - (volts(counts) - _WATER["ph_offset_v"]) / _PH_V_PER_UNIT


def turbidity_ntu(counts):
    """Optical turbidity sensor behind a level shift, linear:
    V = turbidity_offset_v + NTU * turbidity_v_per_ntu (0.25-2.25 V = 0-100 NTU), so clear
    water sits above the ESP32 ADC's 0.15 V floor; an open input decodes far below 0 NTU."""
    return (volts(counts) - _WATER["turbidity_offset_v"]) / _WATER["turbidity_v_per_ntu"]
