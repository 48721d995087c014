# Plantower PMS5003 frame parser, incremental: feed it whatever the UART delivered (nothing,
# half a frame, three frames, line noise) and it keeps the latest frame that passed its checksum.
#
# Frame (32 bytes, big-endian words):
#   0-1   0x42 0x4D                    start characters
#   2-3   frame length = 28            (2 * 13 data words + 2 checksum bytes)
#   4-29  13 data words:
#           0 PM1.0 CF=1   1 PM2.5 CF=1   2 PM10 CF=1          µg/m³, "standard particle"
#           3 PM1.0 atm    4 PM2.5 atm    5 PM10 atm           µg/m³, atmospheric environment
#           6..11 particles > 0.3, 0.5, 1.0, 2.5, 5.0, 10 µm   per 0.1 L
#           12 reserved
#   30-31 checksum = 16-bit sum of bytes 0..29
#
# Resynchronisation: bytes are collected from a 0x42 0x4D header. When the length field is not
# 28 or the checksum fails, the parser looks for the next header inside the bytes it already
# holds (a false header in garbage must not swallow the real frame that follows) and carries on.
#
# Runs on MicroPython and CPython; the frame buffer is allocated once.

from app.sensors import pms5003 as _pms5003

FRAME_LEN = _pms5003.frame_len  # 32
_START1 = 0x42
_START2 = 0x4D
_LENGTH = FRAME_LEN - 4                             # 28


def checksum(buf, n=FRAME_LEN - 2):
    """16-bit sum of the first n bytes."""
    s = 0
    for i in range(n):
        s += buf[i]
    return s & 0xFFFF


class PMS5003:
    def __init__(self):
        self._buf = bytearray(FRAME_LEN)   # frame being assembled
        self._n = 0                        # bytes in _buf
        self.frame = bytearray(FRAME_LEN)  # copy of the latest good frame
        self.frames = 0            # good frames (wraps at 2**30 on the device, harmless)
        self.checksum_errors = 0   # frames with a valid header and length but a bad checksum
        self.sync_errors = 0       # headers with a bad length field
        self.dropped = 0           # bytes discarded while hunting for a header
        self.pm1_0 = None          # latest good frame, atmospheric environment, µg/m³
        self.pm2_5 = None
        self.pm10 = None

    def word(self, index):
        """Data word index (0..12) of the latest good frame."""
        off = 4 + 2 * index
        return (self.frame[off] << 8) | self.frame[off + 1]

    @property
    def frame_checksum(self):
        return (self.frame[30] << 8) | self.frame[31]

    def feed(self, data):
        """Consume a chunk of received bytes; returns how many good frames it completed."""
        good = 0
        for b in data:
            good += self._byte(b)
        return good

    def _byte(self, b):
        buf = self._buf
        n = self._n
        if n == 0:
            if b == _START1:
                buf[0] = b
                self._n = 1
            else:
                self.dropped += 1
            return 0
        if n == 1:
            if b == _START2:
                buf[1] = b
                self._n = 2
            elif b == _START1:   # 0x42 0x42 0x4D: the second 0x42 may start the frame
                self.dropped += 1
            else:
                self.dropped += 2
                self._n = 0
            return 0
        buf[n] = b
        n += 1
        self._n = n
        if n == 4 and ((buf[2] << 8) | buf[3]) != _LENGTH:
            self.sync_errors += 1
            self._resync()
            return 0
        if n < FRAME_LEN:
            return 0
        if checksum(buf) != ((buf[30] << 8) | buf[31]):
            self.checksum_errors += 1
            self._resync()
            return 0
        self.frame[:] = buf
        self._n = 0
        self.frames += 1
        self.pm1_0 = self.word(3)
        self.pm2_5 = self.word(4)
        self.pm10 = self.word(5)
        return 1

    def _resync(self):
        # Drop the bad header and restart from the next 0x42 0x4D (or a trailing 0x42) already
        # in the buffer, shifting it to the front in place.
        buf = self._buf
        n = self._n
        start = n
        for i in range(1, n):
            if buf[i] == _START1 and (i == n - 1 or buf[i + 1] == _START2):
                start = i
                break
        self.dropped += start
        for i in range(start, n):
            buf[i - start] = buf[i]
        self._n = n - start
        # the shifted bytes may already hold a complete length field: re-check it
        if self._n >= 4 and ((buf[2] << 8) | buf[3]) != _LENGTH:
            self.sync_errors += 1
            self._resync()
