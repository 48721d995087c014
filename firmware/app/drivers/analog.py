# Analog front-ends: 12-bit ADC counts to engineering values, and the electrical fault checks
# (open input, shorted input, 4-20 mA loop out of the NAMUR NE 43 band).
#
# Every constant comes from hardware/sensors.toml through the generated app.sensors; nothing
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
# The class-specific front-ends are modules of their own, so a node loads only its own:
# app.drivers.fire_inputs (smoke chamber, NTC) and app.drivers.water_probes (pH, turbidity).
#
# Runs on MicroPython and CPython.

from app.sensors import adc as _ADC
from app.sensors import loop as _LOOP

FULL_SCALE = (1 << _ADC.bits) - 1   # counts at vref
VREF = _ADC.vref
OPEN_COUNTS = _ADC.open_counts      # at or below: wire cut
SHORT_COUNTS = _ADC.short_counts    # at or above: shorted to the rail

LOOP_OPEN_MA = _LOOP.open_ma
LOOP_OVER_MA = _LOOP.over_ma

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


# -- 4-20 mA loops ----------------------------------------------------------------------------

def loop_ma(counts):
    """Loop current across the shunt: mA = volts(counts) / shunt_ohms * 1000."""
    return volts(counts) * 1000.0 / _LOOP.shunt_ohms


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
