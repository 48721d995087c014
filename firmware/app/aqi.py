# Air-quality indices from particulate concentrations: the Vietnamese VN_AQI (Decision
# 1459/QD-TCMT, 2019) and the US EPA AQI (2024 PM2.5 breakpoints). Each index is the maximum of
# its PM2.5 and PM10 sub-indices, capped at 500.
#
# Both are defined on averaged concentrations (VN_AQI: hourly / 24 h; EPA: 24 h, NowCast hourly);
# the node feeds them its filtered instantaneous readings, so the registers are an early
# indication, not the regulatory figure (the fleet side computes that from stored history).
#
# Runs on MicroPython and CPython; tables are module constants (tuples, in flash when frozen).

# VN_AQI: concentration breakpoints (µg/m³) against index breakpoints; linear between them.
_VN_I = (0, 50, 100, 150, 200, 300, 400, 500)
_VN_PM25 = (0, 25, 50, 80, 150, 250, 350, 500)
_VN_PM10 = (0, 50, 150, 250, 350, 420, 500, 600)

# US EPA: (C_lo, C_hi, I_lo, I_hi). PM2.5 in tenths of µg/m³ (the EPA truncates PM2.5 to one
# decimal and PM10 to an integer before looking up the band), PM10 in µg/m³.
_US_PM25_X10 = (
    (0, 90, 0, 50),
    (91, 354, 51, 100),
    (355, 554, 101, 150),
    (555, 1254, 151, 200),
    (1255, 2254, 201, 300),
    (2255, 3254, 301, 500),
)
_US_PM10 = (
    (0, 54, 0, 50),
    (55, 154, 51, 100),
    (155, 254, 101, 150),
    (255, 354, 151, 200),
    (355, 424, 201, 300),
    (425, 604, 301, 500),
)

AQI_MAX = 500


def _round(x):
    # round half up (both agencies round the index to the nearest integer; Python's round() is
    # banker's rounding)
    return int(x + 0.5)


def _vn_sub(c, bps):
    if c is None:
        return 0
    if c <= 0:
        return 0
    for i in range(1, len(bps)):
        if c <= bps[i]:
            lo = bps[i - 1]
            i_lo = _VN_I[i - 1]
            return _round(i_lo + (_VN_I[i] - i_lo) * (c - lo) / (bps[i] - lo))
    return AQI_MAX


def _us_sub(c, table):
    for c_lo, c_hi, i_lo, i_hi in table:
        if c <= c_hi:
            if c < c_lo:   # cannot happen after truncation; be safe
                c = c_lo
            return _round(i_lo + (i_hi - i_lo) * (c - c_lo) / (c_hi - c_lo))
    return AQI_MAX


def vn_pm25(c):
    return _vn_sub(c, _VN_PM25)


def vn_pm10(c):
    return _vn_sub(c, _VN_PM10)


def us_pm25(c):
    if c is None or c <= 0:
        return 0
    return _us_sub(int(c * 10 + 1e-6), _US_PM25_X10)   # truncate to 0.1 µg/m³


def us_pm10(c):
    if c is None or c <= 0:
        return 0
    return _us_sub(int(c + 1e-6), _US_PM10)            # truncate to 1 µg/m³


def vn_aqi(pm2_5, pm10):
    """VN_AQI from PM2.5 and PM10 (µg/m³): max of the sub-indices, capped at 500."""
    v = max(vn_pm25(pm2_5), vn_pm10(pm10))
    return v if v < AQI_MAX else AQI_MAX


def us_aqi(pm2_5, pm10):
    """US EPA AQI from PM2.5 and PM10 (µg/m³): max of the sub-indices, capped at 500."""
    v = max(us_pm25(pm2_5), us_pm10(pm10))
    return v if v < AQI_MAX else AQI_MAX
