# The ESP32 HAL (firmware/app/hal/esp32.py) against a strict stand-in of MicroPython's `machine`
# (esp32_machine.py): every constructor and call must match the documented API, and the HAL must
# read the 4-20 mA loops right through the ESP32's real ADC curve (read_uv, not read_u16).
# Run by tests/firmware/test_esp32_hal.py on the MicroPython unix port and on CPython.
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _p in (_here, _here + "/../mp_unit"):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import time  # noqa: E402

if not hasattr(time, "ticks_ms"):    # CPython: MicroPython's time functions, for the HAL too
    _PERIOD = 1 << 30

    def _ticks_ms():
        return int(time.monotonic() * 1000) & (_PERIOD - 1)

    def _ticks_diff(a, b):
        return ((a - b + (_PERIOD >> 1)) & (_PERIOD - 1)) - (_PERIOD >> 1)

    def _ticks_add(a, d):
        return (a + d) & (_PERIOD - 1)

    def _sleep_ms(ms):
        time.sleep(ms / 1000.0)

    time.ticks_ms = _ticks_ms
    time.ticks_diff = _ticks_diff
    time.ticks_add = _ticks_add
    time.sleep_ms = _sleep_ms

import esp32_machine as machine  # noqa: E402

sys.modules["machine"] = machine
sys.modules["select"] = machine.select_module

import mptest  # noqa: E402  (puts firmware/ on sys.path)
from fakes import scd41_response, sensor  # noqa: E402

from app.boards import BOARDS  # noqa: E402
from app.drivers import analog, fire_inputs, scd41  # noqa: E402
from app.hal.esp32 import Hal  # noqa: E402
from scd41_chip import Scd41Chip  # noqa: E402

BOARD = BOARDS["esp32-devkitc-rs485"]
SHUNT = sensor("loop")["shunt_ohms"]


def make():
    machine.uarts.clear()
    del machine.wdts[:]
    machine.i2c_devices.clear()
    return Hal("/", {"baud": 19200})


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return True
    return False


# -- the stand-in is strict (so the HAL tests mean something) -----------------------------------

def test_standin_rejects_wrong_keywords_and_values():
    assert raises(TypeError, machine.UART, 2, baud=19200)          # the keyword is baudrate
    assert raises(ValueError, machine.UART, 2, 19200, parity=2)    # None, 0 (even) or 1 (odd)
    assert raises(TypeError, machine.ADC, machine.Pin(34), attn=3)  # the keyword is atten
    assert raises(ValueError, machine.ADC, machine.Pin(25))         # ADC2 pin, not ADC1
    assert raises(ValueError, machine.Pin, 34, machine.Pin.OUT)     # GPIO34-39 are input only
    assert raises(TypeError, machine.I2C, 0, machine.Pin(22), machine.Pin(21))  # scl=, sda=
    assert raises(TypeError, machine.WDT, timeout_ms=8000)
    assert raises(ValueError, machine.WDT, id=1, timeout=8000)


# -- the HAL as built on the board ---------------------------------------------------------------

def test_hal_builds_the_modbus_uart_8e1_on_the_board_pins():
    make()
    uart = machine.uarts[BOARD["rs485_uart"]]
    assert (uart.baudrate, uart.bits, uart.parity, uart.stop) == (19200, 8, 0, 1)
    assert (uart.tx, uart.rx) == (BOARD["rs485_tx"], BOARD["rs485_rx"])


def test_watchdog_is_armed_and_fed():
    hal = make()
    assert len(machine.wdts) == 1 and machine.wdts[0].timeout == 8000
    hal.wdt_feed()
    assert machine.wdts[0].feeds == 1


def test_rs485_driver_enable_is_high_only_while_transmitting():
    hal = make()
    uart = machine.uarts[BOARD["rs485_uart"]]
    de = hal._de
    uart.de_pin = de
    assert de.value() == 0
    hal.uart_write(b"\x01\x04\x02\x00\x01")
    assert uart.write_log == [(b"\x01\x04\x02\x00\x01", 1)]
    assert uart.flushes == 1 and de.value() == 0


def test_uart_wait_and_read():
    hal = make()
    uart = machine.uarts[BOARD["rs485_uart"]]
    assert not hal.uart_wait(0)
    uart.rx_data += b"\x01\x03"
    assert hal.uart_wait(0)
    buf = bytearray(8)
    assert hal.uart_readinto(buf) == 2 and buf[:2] == b"\x01\x03"


def _loop(ma):
    machine.pin_volts[BOARD["adc"]["level"]] = ma / 1000.0 * SHUNT


def test_loop_currents_read_true_through_the_esp32_adc():
    hal = make()
    for ma in (4.0, 8.0, 12.0, 16.0, 20.0):
        _loop(ma)
        got = analog.loop_ma(hal.adc("level"))
        assert mptest.approx(got, ma, 0.05), (ma, got)
        assert analog.loop_state(got) == analog.OK


def test_ne43_fault_currents_are_seen_through_the_esp32_adc():
    hal = make()
    for ma, state in ((0.0, analog.OPEN), (3.4, analog.OPEN), (3.8, analog.OK),
                      (20.5, analog.OK), (21.5, analog.SHORT)):
        _loop(ma)
        got = analog.loop_state(analog.loop_ma(hal.adc("level")))
        assert got == state, (ma, got)


def test_ntc_reads_the_a1_range_true():
    hal = make()
    h = sensor("heat")
    import math
    for t in (25.0, 54.0, 58.0, 65.0):
        r = h["r25"] * math.exp(h["beta"] * (1.0 / (t + 273.15) - 1.0 / 298.15))
        machine.pin_volts[BOARD["adc"]["heat"]] = 3.3 * h["r_fixed"] / (r + h["r_fixed"])
        got = fire_inputs.ntc_celsius(hal.adc("heat"))
        assert mptest.approx(got, t, 0.3), (t, got)


def test_i2c_reaches_the_scd41_and_a_nack_is_an_oserror():
    hal = make()
    assert raises(OSError, hal.i2c_read, scd41.ADDR, scd41.GET_DATA_READY, 3)   # nothing there
    chip = Scd41Chip(0)
    chip.source = scd41_response(640, 24.0, 60.0)
    machine.i2c_devices[scd41.ADDR] = chip
    assert raises(OSError, hal.i2c_read, scd41.ADDR, scd41.READ_MEASUREMENT, 9)  # idle: NACK
    hal.i2c_write(scd41.ADDR, scd41.START_PERIODIC)
    ready = hal.i2c_read(scd41.ADDR, scd41.GET_DATA_READY, 3)
    assert scd41.word(ready, 0) & 0x7FF == 0


def test_reboot_is_machine_reset():
    hal = make()
    assert raises(machine.ResetCalled, hal.reboot)


mptest.run(globals())
