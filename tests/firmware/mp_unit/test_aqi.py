# VN_AQI (Decision 1459/QD-TCMT) and US EPA AQI (2024) against hand-computed values.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest

from app import aqi


def test_us_pm25_band_edges():
    assert aqi.us_pm25(0) == 0
    assert aqi.us_pm25(9.0) == 50
    assert aqi.us_pm25(9.1) == 51
    assert aqi.us_pm25(35.4) == 100
    assert aqi.us_pm25(35.5) == 101
    assert aqi.us_pm25(55.4) == 150
    assert aqi.us_pm25(125.4) == 200
    assert aqi.us_pm25(225.4) == 300
    assert aqi.us_pm25(325.4) == 500


def test_us_pm25_truncates_to_one_decimal():
    assert aqi.us_pm25(35.49) == 100          # 35.49 -> 35.4, not 35.5
    # 20 µg/m³: 51 + 49 * (20.0 - 9.1) / (35.4 - 9.1) = 71.3 -> 71
    assert aqi.us_pm25(20) == 71


def test_us_pm10():
    assert aqi.us_pm10(54) == 50
    assert aqi.us_pm10(55) == 51
    assert aqi.us_pm10(154) == 100
    assert aqi.us_pm10(604) == 500
    # 100 µg/m³: 51 + 49 * (100 - 55) / 99 = 73.3 -> 73
    assert aqi.us_pm10(100) == 73


def test_vn_breakpoints_and_interpolation():
    assert aqi.vn_pm25(25) == 50
    assert aqi.vn_pm25(50) == 100
    assert aqi.vn_pm25(80) == 150
    assert aqi.vn_pm25(500) == 500
    assert aqi.vn_pm25(65) == 125            # halfway between 50 and 80
    assert aqi.vn_pm10(150) == 100
    assert aqi.vn_pm10(385) == 250           # halfway between 350 and 420
    assert aqi.vn_pm25(0) == 0


def test_index_is_max_of_subindices_and_capped():
    assert aqi.vn_aqi(25, 200) == 125        # PM10 dominates
    assert aqi.vn_aqi(80, 10) == 150         # PM2.5 dominates
    assert aqi.us_aqi(35.4, 10) == 100
    assert aqi.vn_aqi(900, 900) == 500
    assert aqi.us_aqi(1000, 1000) == 500


mptest.run(globals())
