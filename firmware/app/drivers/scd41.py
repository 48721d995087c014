# Sensirion SCD41 (CO2, temperature, humidity) response decoding. The HAL does the I2C transfer
# (read_measurement, command 0xEC05, 9 bytes); this module only checks and converts the words.
#
# Response layout: CO2 word, CRC8, T word, CRC8, RH word, CRC8; words big-endian. Each CRC-8
# covers the two bytes before it: polynomial 0x31, init 0xFF, no reflection, no final XOR
# (Sensirion check vector: crc8(0xBE, 0xEF) == 0x92).
#
#   CO2 [ppm] = word0
#   T   [°C]  = -45 + 175 * word1 / 65535
#   RH  [%]   = 100 * word2 / 65535
#
# Runs on MicroPython and CPython.

from app import hwdef

ADDR = hwdef.SENSORS["scd41"]["i2c_addr"]
READ_MEASUREMENT = hwdef.SENSORS["scd41"]["read_cmd"]
RESPONSE_LEN = 9


def crc8(buf, start=0, end=None):
    """Sensirion CRC-8 of buf[start:end] (poly 0x31, init 0xFF)."""
    if end is None:
        end = len(buf)
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def word(buf, index):
    """Data word index (0, 1, 2) of a response, after checking its CRC; ValueError if bad."""
    off = index * 3
    if buf is None or len(buf) < off + 3:
        raise ValueError("scd41: short response")
    if crc8(buf, off, off + 2) != buf[off + 2]:
        raise ValueError("scd41: crc")
    return (buf[off] << 8) | buf[off + 1]


def temperature(word1):
    return -45.0 + 175.0 * word1 / 65535.0


def humidity(word2):
    return 100.0 * word2 / 65535.0


def decode(buf):
    """(co2_ppm, temperature_c, humidity_pct) from a 9-byte response; ValueError on a bad CRC
    or a short response."""
    co2 = word(buf, 0)
    t = word(buf, 1)
    rh = word(buf, 2)
    return co2, temperature(t), humidity(rh)
