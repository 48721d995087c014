# A stand-in for MicroPython's `machine` module as the ESP32 port has it, strict about the API:
# the constructors and methods take exactly the positional and keyword arguments MicroPython
# documents (docs.micropython.org: library/machine.{Pin,UART,ADC,I2C,WDT}.html and the ESP32
# quick reference, esp32/quickref.html), with the ESP32's value checks, so a typo or a wrong
# keyword in app/hal/esp32.py fails a test instead of failing on the first board.
#
# Behind the API: pins whose voltage a test sets, the ESP32 ADC1 at 11 dB (its typical
# uncalibrated code curve and the line-fitting calibration behind read_uv(), the same model as
# hardware/sim/encoders.py; tests/sim/test_esp32_standin.py checks they agree), UARTs that
# record what was written, an I2C bus with devices by address (a device NACK raises
# OSError(ENODEV) as the ESP32 port does), and a watchdog that counts feeds.
#
# Runs on MicroPython (unix port) and CPython (with MicroPython's time functions added, see
# test_esp32_hal.py). Install it before importing the HAL:
#   sys.modules["machine"] = esp32_machine

import time

ENODEV = 19
EIO = 5

# ESP32 GPIOs that exist (GPIO 20, 24, 28-31 do not); 34-39 are input only.
_GPIOS = tuple(i for i in range(40) if i not in (20, 24, 28, 29, 30, 31))
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_ADC1_PINS = (32, 33, 34, 35, 36, 37, 38, 39)   # ADC2 is unusable while WiFi runs

# (volts, 12-bit code) at 11 dB, typical part; see hardware/sim/encoders.py for the sources
CURVE = (
    (0.5 - 464 * 2.0 / 2487, 0.0),
    (0.5, 464.0),
    (1.0, 1088.0),
    (1.5, 1707.0),
    (2.0, 2331.0),
    (2.5, 2951.0),
    (3.0, 3775.0),
    (0.0005 * 4095 + 1.0874, 4095.0),
)
CAL_A = 2.0 / (2951 - 464)
CAL_B = 0.5 - 464 * CAL_A

# what the board around the chip does (set by tests)
pin_volts = {}       # gpio -> volts at the pin
i2c_devices = {}     # address -> object with write(now_ms, cmd) / read(now_ms, n), or raw bytes
uarts = {}           # id -> the UART object last constructed
wdts = []
resets = []


class ResetCalled(Exception):
    pass


def reset():
    resets.append(time.ticks_ms())
    raise ResetCalled()


def _check_id(pin_id):
    if isinstance(pin_id, Pin):
        return pin_id.id
    if not isinstance(pin_id, int) or pin_id not in _GPIOS:
        raise ValueError("invalid pin")
    return pin_id


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self.id = _check_id(id)
        self.mode = None
        self._value = 0
        self.history = []
        self.init(mode, pull, value=value, drive=drive, hold=hold)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode not in (-1, None, Pin.IN, Pin.OUT, Pin.OPEN_DRAIN):
            raise ValueError("invalid pin mode")
        if pull not in (-1, None, Pin.PULL_UP, Pin.PULL_DOWN):
            raise ValueError("invalid pull")
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self.id in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        if mode != -1:
            self.mode = mode
        if value is not None:
            self.value(value)

    def value(self, x=None):
        if x is None:
            return self._value
        self._value = 1 if x else 0
        self.history.append(self._value)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, x=None):
        return self.value(x)


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
                 rts=None, cts=None, txbuf=None, rxbuf=None, timeout=None, timeout_char=None,
                 invert=None, flow=None):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % id)
        self.id = id
        self.rx_data = bytearray()
        self.written = bytearray()
        self.flushes = 0
        self.write_log = []           # (bytes, the DE pin's value while writing) when known
        self.de_pin = None
        self.init(baudrate, bits, parity, stop, tx=tx, rx=rx, rts=rts, cts=cts, txbuf=txbuf,
                  rxbuf=rxbuf, timeout=timeout, timeout_char=timeout_char, invert=invert,
                  flow=flow)
        uarts[id] = self

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None, rts=None,
             cts=None, txbuf=None, rxbuf=None, timeout=None, timeout_char=None, invert=None,
             flow=None):
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError("invalid baudrate")
        if bits not in (5, 6, 7, 8):
            raise ValueError("invalid data bits")
        if parity not in (None, 0, 1):
            raise ValueError("invalid parity")   # MicroPython: None, 0 (even) or 1 (odd)
        if stop not in (1, 2):
            raise ValueError("invalid stop bits")
        for p in (tx, rx, rts, cts):
            if p is not None:
                _check_id(p)
        self.baudrate = baudrate
        self.bits = bits
        self.parity = parity
        self.stop = stop
        self.tx = tx
        self.rx = rx
        self.timeout = timeout
        self.rxbuf = rxbuf

    def any(self):
        return len(self.rx_data)

    def read(self, nbytes=None):
        if not self.rx_data:
            return None
        n = len(self.rx_data) if nbytes is None else min(nbytes, len(self.rx_data))
        out = bytes(self.rx_data[:n])
        self.rx_data = self.rx_data[n:]
        return out

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self):
        return self.read()

    def write(self, buf):
        data = bytes(buf)
        self.written += data
        self.write_log.append((data, self.de_pin.value() if self.de_pin else None))
        return len(data)

    def flush(self):
        self.flushes += 1

    def txdone(self):
        return True

    def deinit(self):
        pass


def code_at(volts):
    """The uncalibrated 12-bit code of the ESP32 ADC1 at 11 dB for a pin voltage."""
    if volts <= CURVE[0][0]:
        return 0
    for i in range(1, len(CURVE)):
        v0, c0 = CURVE[i - 1]
        v1, c1 = CURVE[i]
        if volts <= v1:
            return int(c0 + (c1 - c0) * (volts - v0) / (v1 - v0) + 0.5)
    return 4095


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, pin, *, atten=None):
        if not isinstance(pin, Pin):
            pin = Pin(pin)
        if pin.id not in _ADC1_PINS:
            raise ValueError("invalid Pin for ADC")
        self.pin = pin
        self._atten = ADC.ATTN_0DB
        if atten is not None:
            self.atten(atten)

    def init(self, *, atten=None):
        if atten is not None:
            self.atten(atten)

    def atten(self, atten):
        if atten not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation")
        self._atten = atten

    def width(self, bits):
        if bits not in (9, 10, 11, 12):
            raise ValueError("invalid width")

    def _code(self):
        if self._atten != ADC.ATTN_11DB:
            raise AssertionError("stand-in models 11 dB only")
        return code_at(pin_volts.get(self.pin.id, 0.0))

    def read(self):
        return self._code()

    def read_u16(self):
        return self._code() << 4   # the ESP32 port scales its 12-bit code to 16 bits

    def read_uv(self):
        return int((CAL_A * self._code() + CAL_B) * 1e6 + 0.5)


class I2C:
    def __init__(self, id, *, scl, sda, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) does not exist" % id)
        self.id = id
        self.scl = _check_id(scl)
        self.sda = _check_id(sda)
        if not isinstance(freq, int) or freq <= 0:
            raise ValueError("invalid freq")
        self.freq = freq

    def _device(self, addr):
        if not 0 <= addr <= 0x7F:
            raise ValueError("invalid address")
        dev = i2c_devices.get(addr)
        if dev is None:
            raise OSError(ENODEV)
        return dev

    def scan(self):
        return sorted(i2c_devices)

    def writeto(self, addr, buf, stop=True):
        dev = self._device(addr)
        data = bytes(buf)
        if len(data) != 2:
            raise OSError(EIO)      # the devices here take 16-bit commands
        dev.write(time.ticks_ms(), (data[0] << 8) | data[1])
        return len(data)

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._device(addr).read(time.ticks_ms(), nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[: len(data)] = data


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError("WDT(%s) does not exist" % id)
        if not isinstance(timeout, int) or timeout <= 0:
            raise ValueError("invalid timeout")
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self):
        self.feeds += 1


class _Poll:
    """select.poll() over stand-in UARTs (the ESP32 port's UART supports polling)."""

    def __init__(self):
        self._objs = []

    def register(self, obj, mask=1):
        if not hasattr(obj, "any"):
            raise TypeError("object not pollable")
        self._objs.append(obj)

    def poll(self, timeout=-1):
        ready = [(o, 1) for o in self._objs if o.any()]
        if not ready and timeout and timeout > 0:
            time.sleep_ms(min(timeout, 5))
        return ready


class select_module:
    POLLIN = 1
    POLLOUT = 4

    @staticmethod
    def poll():
        return _Poll()
