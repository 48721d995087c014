# HAL for ESP32 boards: RS-485 UART with a driver-enable (DE/RE) pin, ADC1 inputs, a PMS5003 on
# a second UART, an SCD41 on I2C, relay outputs and the hardware watchdog.
#
# Pins come from the board table (app/boards.py, generated from hardware/boards/*.toml),
# overridden per device by data/node.json {"board": "...", "pins": {...}}.

import time

import machine

from app.sensors import adc as _ADC
from app.boards import BOARDS

_WDT_TIMEOUT_MS = 8000  # sampling + a worst-case flash write stay far below this

# ADC readings: the calibrated read_uv() (eFuse line fitting), reported as counts on the
# 0..vref = 0..4095 scale every decoder in app.drivers.analog uses. read_u16() is the raw code:
# ~0.13 V of dead zone and nonlinear above ~2.5 V at 11 dB, never used. The scaling
# counts = uv * 4095 / 3300000 = (uv / 4) * 819 / 165000 stays inside small ints (< 2**30).
_FULL_SCALE = (1 << _ADC.bits) - 1
_UV_NUM = 819            # 4095 / 3 300 000 reduced, with uv pre-divided by 4
_UV_DEN = 165000
assert _ADC.bits == 12 and _ADC.vref == 3.3


class Hal:
    def __init__(self, root, node_cfg, wdt=None):
        self.root = root
        self.baud = node_cfg.get("baud", 19200)
        board = dict(BOARDS[node_cfg.get("board", "esp32-devkitc-rs485")])
        board.update(node_cfg.get("pins", {}))
        self._board = board
        # Modbus serial line: 8 data bits, even parity, 1 stop bit (Modbus default 8E1).
        self._uart = machine.UART(
            board["rs485_uart"], baudrate=self.baud, bits=8, parity=0, stop=1,
            tx=board["rs485_tx"], rx=board["rs485_rx"], timeout=0, rxbuf=512)
        self._de = machine.Pin(board["rs485_de"], machine.Pin.OUT, value=0)
        self._poll = None
        try:
            import select
            self._poll = select.poll()
            self._poll.register(self._uart, select.POLLIN)
        except (ImportError, AttributeError):
            pass
        self._adcs = {}
        for channel, pin in board["adc"].items():
            # 11 dB: the only attenuation spanning the front-ends (accurate 0.15-2.45 V)
            self._adcs[channel] = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
        self._pms = None
        if "pms_rx" in board:
            self._pms = machine.UART(board["pms_uart"], baudrate=9600, rx=board["pms_rx"],
                                     tx=board["pms_tx"], timeout=0, rxbuf=256)
        self._i2c = None
        if "i2c_scl" in board:
            self._i2c = machine.I2C(0, scl=machine.Pin(board["i2c_scl"]),
                                    sda=machine.Pin(board["i2c_sda"]), freq=100000)
        self._outputs = [machine.Pin(p, machine.Pin.OUT, value=0) for p in board["outputs"]]
        self._cmd = bytearray(2)
        # main.py starts the watchdog before the application is imported and hands it over;
        # a second machine.WDT() would subscribe the task twice (OSError on the ESP32 port).
        self._wdt = wdt if wdt is not None else machine.WDT(timeout=_WDT_TIMEOUT_MS)

    # -- Modbus UART --------------------------------------------------------------------
    def uart_wait(self, timeout_ms):
        if self._poll is not None:
            return bool(self._poll.poll(timeout_ms))
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while not self._uart.any():
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_ms(1)
        return True

    def uart_readinto(self, buf):
        return self._uart.readinto(buf) or 0

    def uart_write(self, data):
        self._de.value(1)  # take the bus
        self._uart.write(data)
        self._uart.flush()  # wait until the last stop bit has left the shift register
        self._de.value(0)  # release the bus for the next talker

    # -- sensors ------------------------------------------------------------------------
    def adc(self, channel):
        adc = self._adcs.get(channel)
        if adc is None:
            return 0
        counts = ((adc.read_uv() >> 2) * _UV_NUM + _UV_DEN // 2) // _UV_DEN
        return counts if counts < _FULL_SCALE else _FULL_SCALE

    def sensor_uart_read(self, name):
        if name != "pms" or self._pms is None:
            return b""
        return self._pms.read() or b""

    def i2c_write(self, addr, cmd):
        """A 16-bit send command (SCD41 start/stop). OSError(ENODEV) when not acknowledged."""
        if self._i2c is None:
            raise OSError(19)
        self._cmd[0] = cmd >> 8
        self._cmd[1] = cmd & 0xFF
        self._i2c.writeto(addr, self._cmd)  # raises OSError on NACK

    def i2c_read(self, addr, cmd, n):
        """A 16-bit read command, its 1 ms execution time, then n bytes. OSError on NACK."""
        self.i2c_write(addr, cmd)
        time.sleep_ms(1)  # SCD41 read_measurement / get_data_ready_status execution time
        return self._i2c.readfrom(addr, n)

    # -- outputs, watchdog, reset -------------------------------------------------------
    def set_outputs(self, coils):
        for pin, state in zip(self._outputs, coils):
            pin.value(1 if state else 0)

    def wdt_feed(self):
        self._wdt.feed()

    def gc_point(self):
        pass

    def reboot(self):
        machine.reset()

    def ticks_ms(self):
        return time.ticks_ms()
