"""Physics -> raw: exactly what the real sensor front-ends put on their wires.

This module owns the encoding of physical truth (°C, %/m, mA, pH, NTU, µg/m³, ppm) into ADC
counts, PMS5003 UART frames and SCD41 I2C responses, plus the inverse decoders the tests use to
prove round trips. Everything is a pure function; the electrical constants are read once from
``hardware/sensors.toml`` (through :func:`hardware.regmap.load_sensors`) and never re-typed here.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from typing import Any

from hardware.regmap import load_sensors

__all__ = [
    "ADC_MAX",
    "ESP32_11DB_CURVE",
    "ESP32_CAL_A",
    "ESP32_CAL_B",
    "ESP32_LINEAR_V",
    "FRONT_END",
    "LOOP_FULL_MA",
    "LOOP_ZERO_MA",
    "PMS_RESERVED",
    "FrontEnd",
    "PmsReading",
    "chlorine_ma",
    "counts_to_volts",
    "crc8",
    "esp32_counts_exact",
    "esp32_raw_code",
    "esp32_read_uv",
    "loop_counts",
    "loop_ma",
    "loop_volts",
    "ma_value",
    "ntc_counts",
    "ntc_temp_c",
    "ntc_volts",
    "parse_pms5003",
    "parse_scd41",
    "particle_counts",
    "ph_counts",
    "ph_value",
    "ph_volts",
    "pms5003_frame",
    "pms_cf1",
    "pressure_ma",
    "scd41_response",
    "smoke_counts",
    "smoke_counts_exact",
    "smoke_pct_m",
    "span_ma",
    "turbidity_counts",
    "turbidity_ntu",
    "turbidity_volts",
    "volts_to_counts",
    "volts_to_counts_exact",
]

_KELVIN_25C = 298.15
_KELVIN_0C = 273.15


@dataclass(frozen=True)
class FrontEnd:
    """The electrical constants of every sensor front-end, as declared in sensors.toml."""

    adc_bits: int
    vref: float
    smoke_clean_counts: int
    smoke_counts_per_pct_m: float
    ntc_r25: float
    ntc_beta: float
    ntc_r_fixed: float
    shunt_ohms: float
    pressure_span_bar: float
    chlorine_span_mg_l: float
    ph_offset_v: float
    ph_slope_v: float
    ph_gain: float
    turbidity_v_per_ntu: float
    turbidity_offset_v: float
    pms_frame_len: int
    scd41_addr: int

    @classmethod
    def from_toml(cls, doc: dict[str, Any]) -> FrontEnd:
        water = doc["water"]
        return cls(
            adc_bits=int(doc["adc"]["bits"]),
            vref=float(doc["adc"]["vref"]),
            smoke_clean_counts=int(doc["smoke"]["clean_counts"]),
            smoke_counts_per_pct_m=float(doc["smoke"]["counts_per_pct_m"]),
            ntc_r25=float(doc["heat"]["r25"]),
            ntc_beta=float(doc["heat"]["beta"]),
            ntc_r_fixed=float(doc["heat"]["r_fixed"]),
            shunt_ohms=float(doc["loop"]["shunt_ohms"]),
            pressure_span_bar=float(water["pressure_span"]),
            chlorine_span_mg_l=float(water["chlorine_span"]),
            ph_offset_v=float(water["ph_offset_v"]),
            ph_slope_v=float(water["ph_slope_v"]),
            ph_gain=float(water["ph_gain"]),
            turbidity_v_per_ntu=float(water["turbidity_v_per_ntu"]),
            turbidity_offset_v=float(water["turbidity_offset_v"]),
            pms_frame_len=int(doc["pms5003"]["frame_len"]),
            scd41_addr=int(doc["scd41"]["i2c_addr"]),
        )

    @property
    def adc_max(self) -> int:
        return (1 << self.adc_bits) - 1


FRONT_END = FrontEnd.from_toml(load_sensors())
ADC_MAX = FRONT_END.adc_max

# 4-20 mA loops: the transmitters' live zero and full scale (the loop standard, not a datasheet).
LOOP_ZERO_MA = 4.0
LOOP_FULL_MA = 20.0


# --------------------------------------------------------------------------- ESP32 ADC
#
# The converter on the board is an ESP32's ADC1 at 11 dB attenuation, not an ideal one. Its
# typical uncalibrated transfer curve (12-bit code against pin voltage) has a dead zone at the
# bottom, a linear middle, and an upper region where the code runs ahead of the line and then
# saturates at 4095 around 3.1 V:
#   - Espressif, ESP-IDF ADC guide (v4.4, "ADC Attenuation"): at ADC_ATTEN_DB_11 the measurable
#     input range is 150 mV ~ 2450 mV; outside it the results are not specified.
#     https://docs.espressif.com/projects/esp-idf/en/v4.4.2/api-reference/peripherals/adc.html
#   - measured points of a typical part (code at 0.5/1.0/1.5/2.0/2.5/3.0 V: 464, 1088, 1707,
#     2331, 2951, 3775), the data set behind the widely used G6EJD correction polynomial
#     (github.com/G6EJD/ESP32-ADC-Accuracy-Improvement-function; forum.ezsbc.com t=10334), and
#     saturation at about 3.13 V (w4krl.com "ESP32 analog to digital conversion accuracy":
#     above code 3000, V = 0.0005 * code + 1.0874).
# The firmware reads the calibrated machine.ADC.read_uv(). On the ESP32 the only calibration
# scheme is line fitting (ESP-IDF "ADC Calibration Driver": ADC_CALI_SCHEME_VER_LINE_FITTING),
# V = a * code + b with a and b from eFuse: exact in the linear middle, wrong where the code is
# not linear. Modelled here with the line through the curve's linear region (0.5 V and 2.5 V),
# so read_uv is exact from ~0.13 V to 2.5 V, reads b (~127 mV) at 0 V, over-reads above 2.5 V
# (3.0 V reads 3.16 V) and stops at ~3.42 V when the code saturates.

ESP32_11DB_CURVE: tuple[tuple[float, float], ...] = (
    # (pin volts, 12-bit code), typical part; piecewise linear between points
    (0.5 - 464 * 2.0 / 2487, 0.0),   # dead zone ends where the linear region's line starts
    (0.5, 464.0),
    (1.0, 1088.0),
    (1.5, 1707.0),
    (2.0, 2331.0),
    (2.5, 2951.0),
    (3.0, 3775.0),
    (0.0005 * 4095 + 1.0874, 4095.0),   # saturation (w4krl upper fit at code 4095)
)
ESP32_CAL_A = 2.0 / (2951 - 464)          # volts per code, line fitting through 0.5 V / 2.5 V
ESP32_CAL_B = 0.5 - 464 * ESP32_CAL_A     # volts at code 0
ESP32_LINEAR_V = (0.15, 2.45)             # Espressif's accurate range at 11 dB


def esp32_raw_code(volts: float) -> float:
    """The uncalibrated 12-bit code (what ``read_u16() >> 4`` gives) for a pin voltage."""
    curve = ESP32_11DB_CURVE
    if volts <= curve[0][0]:
        return 0.0
    for (v0, c0), (v1, c1) in itertools.pairwise(curve):
        if volts <= v1:
            return c0 + (c1 - c0) * (volts - v0) / (v1 - v0)
    return 4095.0


def esp32_read_uv(volts: float) -> float:
    """What ``machine.ADC.read_uv()`` returns at 11 dB: line-fitting calibration of the code."""
    code = min(4095.0, max(0.0, round(esp32_raw_code(volts))))
    return (ESP32_CAL_A * code + ESP32_CAL_B) * 1e6


def esp32_counts_exact(volts: float, fe: FrontEnd = FRONT_END) -> float:
    """The firmware HAL's reading of a pin voltage: read_uv() on the 0..vref = 0..4095 scale.

    The simulator feeds this (plus noise) to the unix HAL, so the firmware sees what it would
    see on an ESP32: exact in the linear region, wrong above ~2.5 V and below ~0.13 V."""
    if math.isnan(volts):
        return 0.0
    return esp32_read_uv(volts) / 1e6 / fe.vref * fe.adc_max


# --------------------------------------------------------------------------- ideal ADC
# The ideal converter: the exact inverse of the firmware's decoders (app/drivers/analog.py).
# Round-trip tests use it; the physics feeds esp32_counts_exact instead.


def volts_to_counts_exact(volts: float, fe: FrontEnd = FRONT_END) -> float:
    """Volts -> unrounded counts (the simulator adds noise before the ADC rounds)."""
    return volts / fe.vref * fe.adc_max


def volts_to_counts(volts: float, fe: FrontEnd = FRONT_END) -> int:
    """An ideal calibrated ADC: round to the nearest count, clamp to 0..full scale."""
    if math.isnan(volts):
        return 0
    counts = round(volts_to_counts_exact(volts, fe))
    return max(0, min(fe.adc_max, counts))


def counts_to_volts(counts: float, fe: FrontEnd = FRONT_END) -> float:
    return counts * fe.vref / fe.adc_max


def smoke_counts_exact(pct_m: float, fe: FrontEnd = FRONT_END) -> float:
    """Photoelectric chamber: clean-air counts plus scattered light proportional to obscuration."""
    return fe.smoke_clean_counts + fe.smoke_counts_per_pct_m * pct_m


def smoke_counts(pct_m: float, fe: FrontEnd = FRONT_END) -> int:
    return max(0, min(fe.adc_max, round(smoke_counts_exact(pct_m, fe))))


def smoke_pct_m(counts: float, fe: FrontEnd = FRONT_END) -> float:
    return (counts - fe.smoke_clean_counts) / fe.smoke_counts_per_pct_m


def ntc_volts(temp_c: float, fe: FrontEnd = FRONT_END) -> float:
    """NTC on top of the divider (to vref), fixed resistor to ground: hotter reads higher."""
    kelvin = temp_c + _KELVIN_0C
    if kelvin <= 0:
        return 0.0
    exponent = fe.ntc_beta * (1.0 / kelvin - 1.0 / _KELVIN_25C)
    r_ntc = fe.ntc_r25 * math.exp(min(exponent, 700.0))
    return fe.vref * fe.ntc_r_fixed / (r_ntc + fe.ntc_r_fixed)


def ntc_counts(temp_c: float, fe: FrontEnd = FRONT_END) -> int:
    return volts_to_counts(ntc_volts(temp_c, fe), fe)


def ntc_temp_c(counts: float, fe: FrontEnd = FRONT_END) -> float:
    """Inverse of :func:`ntc_counts` (the firmware's beta equation); needs 0 < counts < max."""
    volts = counts_to_volts(counts, fe)
    r_ntc = fe.ntc_r_fixed * (fe.vref - volts) / volts
    inv_t = 1.0 / _KELVIN_25C + math.log(r_ntc / fe.ntc_r25) / fe.ntc_beta
    return 1.0 / inv_t - _KELVIN_0C


def loop_volts(ma: float, fe: FrontEnd = FRONT_END) -> float:
    """A 4-20 mA loop across the shunt: 4 mA -> 0.4 V, 21 mA -> 2.1 V (100 Ω)."""
    return max(0.0, ma) / 1000.0 * fe.shunt_ohms


def loop_counts(ma: float, fe: FrontEnd = FRONT_END) -> int:
    return volts_to_counts(loop_volts(ma, fe), fe)


def loop_ma(counts: float, fe: FrontEnd = FRONT_END) -> float:
    return counts_to_volts(counts, fe) / fe.shunt_ohms * 1000.0


def span_ma(value: float, span: float) -> float:
    """Linear transmitter: 0 -> 4 mA, span -> 20 mA (no saturation; the physics clamps)."""
    return LOOP_ZERO_MA + (LOOP_FULL_MA - LOOP_ZERO_MA) * value / span


def ma_value(ma: float, span: float) -> float:
    return (ma - LOOP_ZERO_MA) / (LOOP_FULL_MA - LOOP_ZERO_MA) * span


def pressure_ma(bar: float, fe: FrontEnd = FRONT_END) -> float:
    return span_ma(bar, fe.pressure_span_bar)


def chlorine_ma(mg_l: float, fe: FrontEnd = FRONT_END) -> float:
    return span_ma(mg_l, fe.chlorine_span_mg_l)


def ph_volts(ph: float, fe: FrontEnd = FRONT_END) -> float:
    """Glass electrode through the amplifier: the voltage falls as pH rises (pH 7 -> 1.65 V)."""
    return fe.ph_offset_v + (7.0 - ph) * fe.ph_slope_v * fe.ph_gain


def ph_counts(ph: float, fe: FrontEnd = FRONT_END) -> int:
    return volts_to_counts(ph_volts(ph, fe), fe)


def ph_value(counts: float, fe: FrontEnd = FRONT_END) -> float:
    return 7.0 - (counts_to_volts(counts, fe) - fe.ph_offset_v) / (fe.ph_slope_v * fe.ph_gain)


def turbidity_volts(ntu: float, fe: FrontEnd = FRONT_END) -> float:
    """Level-shifted optical sensor: offset plus a linear slope."""
    return fe.turbidity_offset_v + ntu * fe.turbidity_v_per_ntu


def turbidity_counts(ntu: float, fe: FrontEnd = FRONT_END) -> int:
    return volts_to_counts(turbidity_volts(ntu, fe), fe)


def turbidity_ntu(counts: float, fe: FrontEnd = FRONT_END) -> float:
    return (counts_to_volts(counts, fe) - fe.turbidity_offset_v) / fe.turbidity_v_per_ntu


# --------------------------------------------------------------------------- PMS5003

_PMS_START = b"\x42\x4d"
_PMS_DATA_WORDS = 13
# Real PMS5003 frames carry the firmware version (0x97) and an error code (0) in the last word.
PMS_RESERVED = 0x9700


@dataclass(frozen=True)
class PmsReading:
    """A decoded PMS5003 frame (µg/m³ and particle counts per 0.1 L)."""

    pm1_cf1: int
    pm25_cf1: int
    pm10_cf1: int
    pm1: int
    pm25: int
    pm10: int
    counts: tuple[int, int, int, int, int, int]
    reserved: int
    checksum_ok: bool


def _word(value: float) -> int:
    return max(0, min(0xFFFF, round(value)))


def pms_cf1(atm: float) -> float:
    """CF=1 ('standard particle') reading from the atmospheric one.

    A PMS5003 reports both identically up to ~30 µg/m³; above that its CF=1 figure runs about
    1.5 times steeper. An approximation of the shipped firmware's behaviour, good enough to give
    the two blocks their characteristic divergence at high load.
    """
    return atm if atm <= 30.0 else 30.0 + (atm - 30.0) * 1.5


def particle_counts(pm1: float, pm25: float, pm10: float) -> tuple[int, int, int, int, int, int]:
    """Approximate >0.3/0.5/1.0/2.5/5.0/10 µm counts per 0.1 L for an urban aerosol."""
    coarse = max(0.0, pm10 - pm25)
    fine = max(0.0, pm25)
    return (
        _word(120.0 * max(0.0, pm1) + 60.0 * fine),
        _word(40.0 * max(0.0, pm1) + 20.0 * fine),
        _word(8.0 * fine + 2.0 * coarse),
        _word(0.6 * fine + 1.2 * coarse),
        _word(0.1 * fine + 0.35 * coarse),
        _word(0.06 * coarse),
    )


def pms5003_frame(
    pm1: float,
    pm25: float,
    pm10: float,
    *,
    cf1: tuple[float, float, float] | None = None,
    counts: tuple[int, int, int, int, int, int] | None = None,
    reserved: int = PMS_RESERVED,
    bad_checksum: bool = False,
) -> bytes:
    """One 32-byte active-mode frame: 0x42 0x4D, length 28, 13 words, 16-bit byte-sum checksum.

    ``pm1``/``pm25``/``pm10`` are the atmospheric-environment values; ``cf1`` defaults to
    :func:`pms_cf1` of each, ``counts`` to :func:`particle_counts`. ``bad_checksum`` emits the
    frame a noisy line would deliver: everything intact except a checksum off by one.
    """
    cf = cf1 if cf1 is not None else (pms_cf1(pm1), pms_cf1(pm25), pms_cf1(pm10))
    bins = counts if counts is not None else particle_counts(pm1, pm25, pm10)
    words = [*(_word(v) for v in cf), _word(pm1), _word(pm25), _word(pm10),
             *(_word(c) for c in bins), reserved & 0xFFFF]
    body = _PMS_START + struct.pack(">H", 2 * _PMS_DATA_WORDS + 2) + struct.pack(">13H", *words)
    checksum = sum(body) & 0xFFFF
    if bad_checksum:
        checksum = (checksum + 1) & 0xFFFF
    return body + struct.pack(">H", checksum)


def parse_pms5003(frame: bytes) -> PmsReading:
    """Decode one frame (tests only; the firmware has its own parser). Raises ValueError."""
    if len(frame) != FRONT_END.pms_frame_len or frame[:2] != _PMS_START:
        raise ValueError(f"not a PMS5003 frame: {frame.hex()}")
    (length,) = struct.unpack(">H", frame[2:4])
    if length != 2 * _PMS_DATA_WORDS + 2:
        raise ValueError(f"PMS5003 frame length {length}, expected 28")
    words = struct.unpack(">13H", frame[4:30])
    (checksum,) = struct.unpack(">H", frame[30:32])
    c = words[6:12]
    return PmsReading(
        pm1_cf1=words[0], pm25_cf1=words[1], pm10_cf1=words[2],
        pm1=words[3], pm25=words[4], pm10=words[5],
        counts=(c[0], c[1], c[2], c[3], c[4], c[5]),
        reserved=words[12],
        checksum_ok=checksum == sum(frame[:30]) & 0xFFFF,
    )


# --------------------------------------------------------------------------- SCD41


def crc8(data: bytes) -> int:
    """Sensirion CRC-8: polynomial 0x31, init 0xFF, no reflection, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _sensirion_word(value: int) -> bytes:
    raw = struct.pack(">H", value)
    return raw + bytes([crc8(raw)])


def scd41_response(co2_ppm: float, temp_c: float, rh_pct: float) -> bytes:
    """The 9 bytes answering read_measurement (0xEC05): three words, each followed by its CRC."""
    t_word = _word((temp_c + 45.0) * 65535.0 / 175.0)
    rh_word = _word(rh_pct * 65535.0 / 100.0)
    return _sensirion_word(_word(co2_ppm)) + _sensirion_word(t_word) + _sensirion_word(rh_word)


def parse_scd41(response: bytes) -> tuple[int, float, float]:
    """(co2 ppm, °C, %RH) from a 9-byte response; ValueError on a bad length or CRC."""
    if len(response) != 9:
        raise ValueError(f"SCD41 response must be 9 bytes, got {len(response)}")
    words = []
    for i in range(0, 9, 3):
        if crc8(response[i : i + 2]) != response[i + 2]:
            raise ValueError(f"SCD41 CRC mismatch in word {i // 3}: {response.hex()}")
        words.append(int.from_bytes(response[i : i + 2], "big"))
    return words[0], -45.0 + 175.0 * words[1] / 65535.0, 100.0 * words[2] / 65535.0
