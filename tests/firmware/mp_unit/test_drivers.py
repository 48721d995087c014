# Byte-vector and formula tests of the decoders: SCD41 CRC-8, PMS5003 framing, analog front-ends.
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest
from fakes import (
    loop_counts, ntc_counts, ph_counts, pms_frame, scd41_response, sensor, smoke_counts,
    turbidity_counts,
)

from app.drivers import analog, fire_inputs, scd41, water_probes
from app.drivers.pms5003 import PMS5003

approx = mptest.approx


# -- SCD41 ----------------------------------------------------------------------------------

def test_sensirion_crc8_check_vector():
    assert scd41.crc8(b"\xbe\xef") == 0x92


def test_scd41_response_vector_decodes():
    # words 0x01F4 (500 ppm), 0x6667 (25.0 °C), 0x5EB9 (37.0 %RH), each followed by its CRC-8
    co2, t, rh = scd41.decode(bytes([0x01, 0xF4, 0x33, 0x66, 0x67, 0xA2, 0x5E, 0xB9, 0x3C]))
    assert co2 == 500
    assert approx(t, 25.0, 0.01), t
    assert approx(rh, 37.0, 0.01), rh


def test_scd41_round_trip_and_bad_crc_raises():
    buf = bytearray(scd41_response(812, 21.5, 48.0))
    co2, t, rh = scd41.decode(buf)
    assert co2 == 812 and approx(t, 21.5, 0.01) and approx(rh, 48.0, 0.01)
    buf[5] ^= 0x01
    try:
        scd41.decode(buf)
        raise AssertionError("bad CRC accepted")
    except ValueError:
        pass
    try:
        scd41.decode(b"\x01\xf4")
        raise AssertionError("short response accepted")
    except ValueError:
        pass


# -- PMS5003 --------------------------------------------------------------------------------

def test_pms_single_frame():
    p = PMS5003()
    assert p.feed(pms_frame(5, 12, 20)) == 1
    assert (p.pm1_0, p.pm2_5, p.pm10) == (5, 12, 20)
    assert p.word(6) == 1200 and p.checksum_errors == 0


def test_pms_frame_split_in_arbitrary_chunks():
    frame = pms_frame(7, 30, 41)
    for cut in (1, 2, 3, 4, 5, 17, 30, 31):
        p = PMS5003()
        assert p.feed(frame[:cut]) == 0
        assert p.feed(frame[cut:]) == 1, cut
        assert p.pm2_5 == 30
    p = PMS5003()
    got = 0
    for b in frame:       # one byte at a time
        got += p.feed(bytes([b]))
    assert got == 1 and p.pm10 == 41


def test_pms_resync_after_garbage():
    p = PMS5003()
    garbage = b"\x00\xff\x42\x13\x42\x4d\x00\x99\x4d\x42"  # includes a false header
    assert p.feed(garbage + pms_frame(3, 9, 15) + b"\x42") == 1
    assert p.pm2_5 == 9
    assert p.feed(pms_frame(4, 10, 16)[1:]) == 1      # trailing 0x42 above started this frame
    assert p.pm2_5 == 10
    assert p.frames == 2 and p.dropped > 0


def test_pms_false_header_inside_garbage_does_not_swallow_the_real_frame():
    p = PMS5003()
    # a plausible header (right length) whose "frame" is cut short by the real one
    junk = b"\x42\x4d\x00\x1c\x01\x02\x03"
    assert p.feed(junk + pms_frame(1, 2, 3)) == 1
    assert p.pm10 == 3
    assert p.checksum_errors == 1


def test_pms_bad_checksum_counted_and_ignored():
    p = PMS5003()
    p.feed(pms_frame(5, 12, 20))
    bad = bytearray(pms_frame(50, 120, 200))
    bad[10] ^= 0x40
    assert p.feed(bytes(bad)) == 0
    assert p.checksum_errors == 1
    assert p.pm2_5 == 12                          # the last good frame stands
    assert p.feed(pms_frame(6, 13, 21) * 3) == 3  # several frames in one chunk
    assert p.pm2_5 == 13 and p.checksum_errors == 1


# -- analog -------------------------------------------------------------------------------

def test_ntc_round_trip():
    for t in (-20.0, 0.0, 25.0, 58.0, 100.0):
        c = ntc_counts(t)
        got = fire_inputs.ntc_celsius(c)
        assert approx(got, t, 0.2), (t, c, got)
    # 25 °C: R = r25 -> V = vref * r_fixed / (r25 + r_fixed)
    h = sensor("heat")
    expect = 4095 * h["r_fixed"] / (h["r25"] + h["r_fixed"])
    assert abs(ntc_counts(25.0) - expect) <= 0.5, (ntc_counts(25.0), expect)


def test_ntc_open_and_short_are_rail_faults():
    assert analog.rail(0) == analog.OPEN       # thermistor open: no current, 0 V
    assert analog.rail(4095) == analog.SHORT
    assert analog.rail(ntc_counts(-5.0)) == analog.OK
    assert analog.rail(ntc_counts(150.0)) == analog.OK
    # below about -9 °C the divider is under the ESP32 ADC's floor: read as an open thermistor
    assert analog.rail(ntc_counts(-40.0)) == analog.OPEN
    fire_inputs.ntc_celsius(0)                      # finite, no ZeroDivisionError
    fire_inputs.ntc_celsius(4095)


def test_smoke_counts_to_obscuration():
    assert approx(fire_inputs.smoke_pct_m(smoke_counts(0.0)), 0.0, 0.01)
    assert approx(fire_inputs.smoke_pct_m(smoke_counts(4.0)), 4.0, 0.01)
    assert fire_inputs.smoke_pct_m(0) < -6                 # an open input is never "clean air"


def test_loop_current_and_namur_band():
    assert approx(analog.loop_ma(loop_counts(4.0)), 4.0, 0.01)
    assert approx(analog.loop_ma(loop_counts(20.0)), 20.0, 0.01)
    assert analog.loop_state(3.5) == analog.OPEN
    assert analog.loop_state(3.7) == analog.OK
    assert analog.loop_state(21.1) == analog.SHORT
    assert approx(analog.loop_value(12.0, 5.0), 2.5, 1e-6)


def test_ph_and_turbidity():
    for ph in (4.0, 7.0, 10.0):
        assert approx(water_probes.ph(ph_counts(ph)), ph, 0.02)
    assert water_probes.ph(ph_counts(4.0)) < water_probes.ph(ph_counts(7.0))
    assert approx(analog.volts(ph_counts(7.0)), 1.65, 0.002)
    assert approx(water_probes.turbidity_ntu(turbidity_counts(50.0)), 50.0, 0.1)


mptest.run(globals())
