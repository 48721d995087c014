# HAL for the MicroPython unix port: the node's RS-485 UART is a pseudo-terminal joined to the
# simulator's bus hub, and its sensors are fed by the simulator through standard input.
#
# Sensor feed: one JSON object per line on stdin, a snapshot of the node's raw hardware inputs:
#   {"adc": {channel: counts}, "uart": {name: "<hex of new bytes>"}, "i2c": {"<addr>": "<hex>"},
#    "power": {"<addr>": cycles}}
# ADC channels absent from the snapshot read 0 (an open input). The I2C device (the SCD41) is
# app.hal.scd41_chip's datasheet state machine, measuring the feed's bytes; an address absent
# from "i2c" does not acknowledge (OSError), a new "power" count power-cycles the chip (idle
# until started). {"diag": 1} asks for a heap report on stdout.
# Coil changes are reported on stdout as {"outputs": [..]} so the simulator can show a sounder.
# End of stdin means the simulator is gone: the node exits rather than run orphaned.

import binascii
import gc
import json
import select
import sys
import termios
import time

import micropython

EXIT_REBOOT = 75  # the simulator's supervisor restarts a node that exits with this code


class Hal:
    def __init__(self, root, node_cfg):
        self.root = root
        self.baud = node_cfg.get("baud", 19200)
        self._uart = open(node_cfg["uart"], "r+b")
        fd = self._uart.fileno()
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[6][6] = 0  # VMIN: return whatever is buffered
        attrs[6][5] = 0  # VTIME: no inter-byte timer; the node does its own t3.5 timing
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._stdin = sys.stdin.buffer
        self._poll = select.poll()
        self._poll.register(self._uart, select.POLLIN)
        self._poll.register(sys.stdin, select.POLLIN)
        self._adc = {}
        self._i2c = {}        # address -> chip model
        self._i2c_power = {}  # address -> last power-cycle count
        self._sensor_uart = {}
        self.wdt_feeds = 0
        self.peak_alloc = 0
        # Sensors are powered before the application starts on a real board: wait (briefly)
        # for the simulator's first snapshot so the first sample is not of unpowered inputs.
        for _ in range(50):
            if self._adc or self._i2c or self._sensor_uart:
                break
            for obj, _event in self._poll.poll(100):
                if obj is not self._uart:
                    self._read_feed()

    # -- Modbus UART --------------------------------------------------------------------
    def uart_wait(self, timeout_ms):
        """Wait up to timeout_ms for UART bytes; sensor feed lines are consumed on the way."""
        for obj, _event in self._poll.poll(timeout_ms):
            if obj is self._uart:
                return True
            self._read_feed()
        return False

    def uart_readinto(self, buf):
        n = self._uart.readinto(buf)
        return n or 0

    def uart_write(self, data):
        self._uart.write(data)

    # -- sensors ------------------------------------------------------------------------
    def adc(self, channel):
        return self._adc.get(channel, 0)

    def sensor_uart_read(self, name):
        data = self._sensor_uart.get(name)
        if not data:
            return b""
        self._sensor_uart[name] = b""
        return data

    def i2c_write(self, addr, cmd):
        self._chip(addr).write(time.ticks_ms(), cmd)

    def i2c_read(self, addr, cmd, n):
        chip = self._chip(addr)
        chip.write(time.ticks_ms(), cmd)
        time.sleep_ms(1)  # the command's execution time, as on the board
        return chip.read(time.ticks_ms(), n)

    def _chip(self, addr):
        chip = self._i2c.get(addr)
        if chip is None:
            raise OSError(19)  # ENODEV: no acknowledge
        return chip

    def _read_feed(self):
        line = self._stdin.readline()
        if not line:
            sys.exit(0)
        try:
            snap = json.loads(line)
        except ValueError:
            return  # a torn line from the simulator is dropped, the next snapshot replaces it
        if "diag" in snap:
            self._diag()
            return
        adc = snap.get("adc")
        if adc is not None:
            self._adc = adc
        i2c = snap.get("i2c")
        if i2c is not None:
            now = time.ticks_ms()
            for chip in self._i2c.values():
                chip.source = None                 # off the bus unless the feed names it
            for k, v in i2c.items():
                addr = int(k)
                if addr not in self._i2c:
                    # imported here: only a node with an I2C device pays for the model
                    from app.hal.scd41_chip import Scd41Chip
                    self._i2c[addr] = Scd41Chip(now)
                self._i2c[addr].source = binascii.unhexlify(v)
            for k, cycles in snap.get("power", {}).items():
                addr = int(k)
                chip = self._i2c.get(addr)
                if chip is not None and self._i2c_power.get(addr, cycles) != cycles:
                    chip.power_on(now)
                self._i2c_power[addr] = cycles
        for name, hexdata in snap.get("uart", {}).items():
            if hexdata:
                self._sensor_uart[name] = self._sensor_uart.get(name, b"") \
                    + binascii.unhexlify(hexdata)

    def _diag(self):
        gc.collect()
        print(json.dumps({"diag": {"peak_alloc": self.peak_alloc, "alloc": gc.mem_alloc(),
                                   "free": gc.mem_free()}}))
        micropython.mem_info()

    # -- outputs, watchdog, reset -------------------------------------------------------
    def set_outputs(self, coils):
        print(json.dumps({"outputs": list(coils)}))

    def wdt_feed(self):
        # No hardware watchdog on the unix port: the simulator's supervisor plays that part by
        # restarting a node process that dies. Count feeds so tests can see the loop is alive.
        self.wdt_feeds += 1

    def gc_point(self):
        # Track the heap high-water mark just before collecting (the benchmark reports it).
        used = gc.mem_alloc()
        if used > self.peak_alloc:
            self.peak_alloc = used

    def reboot(self):
        sys.exit(EXIT_REBOOT)

    def ticks_ms(self):
        return time.ticks_ms()
