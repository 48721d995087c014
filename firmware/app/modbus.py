# Modbus RTU slave: CRC-16, request parsing and response building. No I/O here: the node loop
# cuts frames from the UART by silent interval and hands each one to Slave.handle(), which returns
# the response frame (or None when the protocol says to stay quiet).
#
# Function codes: 01 read coils, 03 read holding, 04 read input, 05 write coil, 06 write holding,
# 15 write coils, 16 write holdings. Exceptions: 01 illegal function, 02 illegal data address,
# 03 illegal data value, 04 device failure. Address 0 is broadcast: writes are executed, nothing
# is answered. Nothing a master sends may raise out of handle(): a bad frame is counted and dropped.

from array import array

from app.hwdef import OTA_BASE

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
DEVICE_FAILURE = 4


def _crc_table():
    table = array("H", [0] * 256)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[i] = crc
    return table


_TABLE = _crc_table()
del _crc_table  # run once: its code need not stay in the heap


def crc16(buf, n=-1):
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF) of buf[:n]; sent low byte first.

    Iterating the bytes is ~20 % faster than indexing them on MicroPython (one 240-byte OTA
    chunk: ~20 us on the unix port, every chunk is checked twice); an ESP32 runs this bytecode
    50-200x slower, where a @micropython.viper build of this loop would be the next step."""
    if n >= 0:
        buf = memoryview(buf)[:n]
    crc = 0xFFFF
    table = _TABLE
    for b in buf:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def check_crc(frame, n):
    if n < 4:
        return False
    crc = crc16(frame, n - 2)
    return frame[n - 2] == (crc & 0xFF) and frame[n - 1] == (crc >> 8)


class Slave:
    """Answers Modbus requests from a RegBank.

    on_write(kind, address, count) is called after holding registers or coils change, so the
    node can persist thresholds or act on a command; if it raises, the master gets exception 04
    (device failure) and the error is counted.

    ota, when set (the node), owns the OTA window from OTA_BASE up: input reads there come
    from the array ota.ota_inputs, and holding writes go unparsed to
    ota.ota_write(offset, count, frame, data_at), which returns 0 or an exception code.
    """

    def __init__(self, address, bank, on_write=None):
        self.address = address
        self.bank = bank
        self.on_write = on_write
        self.ota = None
        self.frames_ok = 0
        self.crc_errors = 0
        self.exceptions = 0
        self._out = bytearray(256)  # longest RTU frame

    # -- frame level --------------------------------------------------------------------
    def handle(self, frame, n):
        """Handle frame[:n]; return a memoryview of the response frame, or None."""
        if n < 4:
            return None  # line noise shorter than the smallest frame
        if not check_crc(frame, n):
            self.crc_errors = (self.crc_errors + 1) & 0xFFFF
            self.bank.set("crc_errors", self.crc_errors)
            return None
        unit = frame[0]
        if unit != self.address and unit != 0:
            return None  # someone else's request (or another node's reply)
        try:
            length = self._dispatch(frame, n, unit == 0)
        except Exception:  # noqa: BLE001 - a node must never die on a request
            length = self._exception(frame[1], DEVICE_FAILURE)
        if unit == 0:
            return None
        if length < 0:  # exception response built with negative length marker
            length = -length
            self.exceptions = (self.exceptions + 1) & 0xFFFF
            self.bank.set("exceptions_sent", self.exceptions)
        else:
            self.frames_ok = (self.frames_ok + 1) & 0xFFFF
            self.bank.set("frames_ok", self.frames_ok)
        out = self._out
        out[0] = self.address
        crc = crc16(out, length)
        out[length] = crc & 0xFF
        out[length + 1] = crc >> 8
        return memoryview(out)[: length + 2]

    def _exception(self, function, code):
        out = self._out
        out[1] = (function | 0x80) & 0xFF
        out[2] = code
        return -3

    # -- PDU level: each returns the response length without CRC (negative: exception) ----
    def _dispatch(self, f, n, broadcast):
        fc = f[1]
        if fc in (1, 3, 4):
            if broadcast:
                return 0
            if n != 8:
                return self._exception(fc, ILLEGAL_VALUE)
            start = (f[2] << 8) | f[3]
            count = (f[4] << 8) | f[5]
            if fc == 1:
                return self._read_bits(fc, start, count)
            return self._read_words(fc, start, count)
        if fc == 5:
            if n != 8:
                return self._exception(fc, ILLEGAL_VALUE)
            value = (f[4] << 8) | f[5]
            if value not in (0x0000, 0xFF00):
                return self._exception(fc, ILLEGAL_VALUE)
            return self._write_bits(fc, (f[2] << 8) | f[3], 1, f, -1, value == 0xFF00)
        if fc == 6:
            if n != 8:
                return self._exception(fc, ILLEGAL_VALUE)
            return self._write_words(fc, (f[2] << 8) | f[3], 1, f, 4)
        if fc in (15, 16):
            if n < 9:
                return self._exception(fc, ILLEGAL_VALUE)
            start = (f[2] << 8) | f[3]
            count = (f[4] << 8) | f[5]
            nbytes = f[6]
            if n != 9 + nbytes:
                return self._exception(fc, ILLEGAL_VALUE)
            if fc == 15:
                if not 1 <= count <= 1968 or nbytes != (count + 7) // 8:
                    return self._exception(fc, ILLEGAL_VALUE)
                return self._write_bits(fc, start, count, f, 7, False)
            if not 1 <= count <= 123 or nbytes != 2 * count:
                return self._exception(fc, ILLEGAL_VALUE)
            return self._write_words(fc, start, count, f, 7)
        return self._exception(fc, ILLEGAL_FUNCTION)

    def _read_words(self, fc, start, count):
        if not 1 <= count <= 125:
            return self._exception(fc, ILLEGAL_VALUE)
        regs = self.bank.input if fc == 4 else self.bank.holding
        if fc == 4 and start >= OTA_BASE and self.ota is not None:
            regs = self.ota.ota_inputs
            start -= OTA_BASE
        if start + count > len(regs):
            return self._exception(fc, ILLEGAL_ADDRESS)
        out = self._out
        out[1] = fc
        out[2] = 2 * count
        j = 3
        for i in range(start, start + count):
            word = regs[i]
            out[j] = word >> 8
            out[j + 1] = word & 0xFF
            j += 2
        return j

    def _read_bits(self, fc, start, count):
        coils = self.bank.coils
        if not 1 <= count <= 2000:
            return self._exception(fc, ILLEGAL_VALUE)
        if start + count > len(coils):
            return self._exception(fc, ILLEGAL_ADDRESS)
        out = self._out
        nbytes = (count + 7) // 8
        out[1] = fc
        out[2] = nbytes
        for i in range(nbytes):
            out[3 + i] = 0
        for i in range(count):
            if coils[start + i]:
                out[3 + i // 8] |= 1 << (i % 8)
        return 3 + nbytes

    def _write_words(self, fc, start, count, f, offset):
        if start >= OTA_BASE and self.ota is not None:
            # the OTA window: a chunk's bytes go from this frame to the flash, unparsed
            code = self.ota.ota_write(start - OTA_BASE, count, f, offset)
            return self._exception(fc, code) if code else self._echo(f, fc)
        values = [(f[offset + 2 * i] << 8) | f[offset + 2 * i + 1] for i in range(count)]
        error = self.bank.check_write(start, values)
        if error:
            return self._exception(fc, error)
        for i in range(count):
            self.bank.holding[start + i] = values[i]
        if self.on_write:
            self.on_write("holding", start, count)
        return self._echo(f, fc)

    def _write_bits(self, fc, start, count, f, offset, single_value):
        coils = self.bank.coils
        if start + count > len(coils):
            return self._exception(fc, ILLEGAL_ADDRESS)
        for i in range(count):
            if offset < 0:
                coils[start + i] = 1 if single_value else 0
            else:
                coils[start + i] = (f[offset + i // 8] >> (i % 8)) & 1
        if self.on_write:
            self.on_write("coil", start, count)
        return self._echo(f, fc)

    def _echo(self, f, fc):
        # 05/06 echo the request; 15/16 echo start address and quantity.
        out = self._out
        out[1] = fc
        for i in range(2, 6):
            out[i] = f[i]
        return 6

