"""Physics -> raw encoders: byte vectors from the datasheets and round trips through decoders."""

from __future__ import annotations

import pytest

from hardware.regmap import load_sensors
from hardware.sim import encoders as enc

SENSORS = load_sensors()


def test_sensirion_crc8_matches_the_datasheet_check_value() -> None:
    assert enc.crc8(b"\xbe\xef") == 0x92
    assert enc.crc8(b"") == 0xFF


def test_scd41_datasheet_read_measurement_example_decodes() -> None:
    # SCD4x datasheet, read_measurement example: 500 ppm, 25 °C, 37 %RH.
    co2, temp, rh = enc.parse_scd41(bytes.fromhex("01f4336667a25eb93c"))
    assert co2 == 500
    assert temp == pytest.approx(25.0, abs=0.01)
    assert rh == pytest.approx(37.0, abs=0.01)


def test_scd41_response_byte_vector() -> None:
    # (25 + 45) * 65535 / 175 = 26214 exactly -> 0x6666; 37 * 655.35 = 24247.95 -> 0x5EB8.
    assert enc.scd41_response(500, 25.0, 37.0) == bytes.fromhex("01f4336666935eb80d")


@pytest.mark.parametrize(("co2", "temp", "rh"), [(400, 31.0, 75.0), (1500, -10.0, 5.0),
                                                  (40000, 60.0, 100.0)])
def test_scd41_round_trip(co2: int, temp: float, rh: float) -> None:
    got = enc.parse_scd41(enc.scd41_response(co2, temp, rh))
    assert got[0] == co2
    assert got[1] == pytest.approx(temp, abs=0.002)
    assert got[2] == pytest.approx(rh, abs=0.001)


def test_scd41_corrupted_word_fails_its_crc() -> None:
    bad = bytearray(enc.scd41_response(450, 30.0, 70.0))
    bad[4] ^= 0x10
    with pytest.raises(ValueError, match="CRC"):
        enc.parse_scd41(bytes(bad))


def test_pms5003_frame_byte_vector() -> None:
    frame = enc.pms5003_frame(10, 20, 30, cf1=(10, 20, 30), counts=(1000, 300, 50, 5, 1, 0))
    assert frame.hex() == "424d001c000a0014001e000a0014001e03e8012c00320005000100009700030a"
    assert len(frame) == SENSORS["pms5003"]["frame_len"]


def test_pms5003_checksum_is_the_16_bit_sum_of_the_first_30_bytes() -> None:
    frame = enc.pms5003_frame(812, 1500, 2400)
    assert int.from_bytes(frame[30:32], "big") == sum(frame[:30]) & 0xFFFF
    reading = enc.parse_pms5003(frame)
    assert (reading.pm1, reading.pm25, reading.pm10) == (812, 1500, 2400)
    assert reading.pm25_cf1 > reading.pm25          # CF=1 runs steeper at high load
    assert reading.checksum_ok


def test_pms5003_bad_checksum_frame_is_otherwise_intact() -> None:
    good = enc.pms5003_frame(12, 25, 40)
    bad = enc.pms5003_frame(12, 25, 40, bad_checksum=True)
    assert bad[:30] == good[:30] and bad[30:] != good[30:]
    assert not enc.parse_pms5003(bad).checksum_ok


def test_pms5003_low_load_cf1_equals_atmospheric() -> None:
    reading = enc.parse_pms5003(enc.pms5003_frame(14, 20, 28))
    assert (reading.pm1_cf1, reading.pm25_cf1, reading.pm10_cf1) == (14, 20, 28)
    assert reading.counts[0] > reading.counts[1] > reading.counts[2]


@pytest.mark.parametrize("temp", [-20.0, 0.0, 25.0, 28.0, 58.0, 100.0])
def test_ntc_round_trip(temp: float) -> None:
    assert enc.ntc_temp_c(enc.ntc_counts(temp)) == pytest.approx(temp, abs=0.05)


def test_ntc_divider_keeps_the_a1_range_in_the_adc_linear_region_and_rises_with_heat() -> None:
    heat = SENSORS["heat"]
    vref = SENSORS["adc"]["vref"]
    divider = heat["r_fixed"] / (heat["r25"] + heat["r_fixed"])
    assert enc.ntc_volts(25.0) == pytest.approx(vref * divider)
    low, high = enc.ESP32_LINEAR_V
    for temp in (0.0, 25.0, 54.0, 65.0, 85.0):   # room to well past the A1 static range
        assert low < enc.ntc_volts(temp) < high, temp
    assert enc.ntc_counts(58.0) > enc.ntc_counts(28.0) > enc.ntc_counts(0.0)


def test_smoke_counts_follow_the_chamber_gain() -> None:
    smoke = SENSORS["smoke"]
    assert enc.smoke_counts(0.0) == smoke["clean_counts"]
    assert enc.smoke_counts(4.0) == smoke["clean_counts"] + 4 * smoke["counts_per_pct_m"]
    assert enc.smoke_pct_m(enc.smoke_counts(2.5)) == pytest.approx(2.5, abs=0.01)


def test_loop_shunt_voltages() -> None:
    shunt = SENSORS["loop"]["shunt_ohms"]
    assert enc.loop_volts(4.0) == pytest.approx(4e-3 * shunt)
    assert enc.loop_volts(20.0) == pytest.approx(20e-3 * shunt)
    assert enc.loop_counts(0.0) == 0


@pytest.mark.parametrize("ma", [3.8, 4.0, 5.6, 12.0, 20.0, 20.5])
def test_loop_round_trip(ma: float) -> None:
    half_count_ma = 0.5 * enc.FRONT_END.vref / enc.ADC_MAX / enc.FRONT_END.shunt_ohms * 1000.0
    assert enc.loop_ma(enc.loop_counts(ma)) == pytest.approx(ma, abs=half_count_ma)


def test_loop_spans() -> None:
    assert enc.pressure_ma(0.0) == 4.0
    assert enc.pressure_ma(SENSORS["water"]["pressure_span"]) == 20.0
    assert enc.chlorine_ma(SENSORS["water"]["chlorine_span"] / 2) == 12.0
    assert enc.ma_value(enc.span_ma(1.23, 5.0), 5.0) == pytest.approx(1.23)


def test_ph_amplifier_voltage_falls_as_ph_rises() -> None:
    assert enc.ph_volts(7.0) == pytest.approx(1.65)
    assert enc.ph_volts(4.0) == pytest.approx(2.18, abs=0.005)
    assert enc.ph_counts(8.5) < enc.ph_counts(7.0) < enc.ph_counts(6.0)


@pytest.mark.parametrize("ph", [2.0, 6.0, 7.2, 8.5, 12.0])
def test_ph_round_trip(ph: float) -> None:
    assert enc.ph_value(enc.ph_counts(ph)) == pytest.approx(ph, abs=0.01)


@pytest.mark.parametrize("ntu", [0.5, 2.0, 10.0, 100.0])
def test_turbidity_round_trip(ntu: float) -> None:
    assert enc.turbidity_ntu(enc.turbidity_counts(ntu)) == pytest.approx(ntu, abs=0.02)


@pytest.mark.parametrize(
    "counts",
    [
        enc.smoke_counts(-50.0), enc.smoke_counts(1000.0),
        enc.ntc_counts(-300.0), enc.ntc_counts(-60.0), enc.ntc_counts(500.0),
        enc.loop_counts(-5.0), enc.loop_counts(40.0),
        enc.ph_counts(-5.0), enc.ph_counts(20.0),
        enc.turbidity_counts(-1.0), enc.turbidity_counts(1000.0),
    ],
)
def test_every_adc_encoder_clamps_to_twelve_bits(counts: int) -> None:
    assert 0 <= counts <= enc.ADC_MAX == 4095
