# HAL for the MicroPython unix port: the node's RS-485 UART is a pseudo-terminal joined to the
# simulator's bus hub, and its sensors are fed by the simulator through standard input.
#
# Sensor feed: one JSON object per line on stdin, a snapshot of the node's raw hardware inputs:
#   {"adc": {channel: counts}, "uart": {name: "<hex of new bytes>"}}
# ADC channels absent from the snapshot read 0 (an open input). {"diag": 1} asks for a heap
# report on stdout.
# I2C: the devices (the SCD41) live in the simulator, as the chip lives outside the MCU on a
# board: each phase of a transfer goes out on stdout as {"i2c": [seq, addr, cmd, n, ticks_ms]}
# (n == 0: the command write; n > 0: read n bytes; the node's clock, so the chip times the
# phases as the node made them, not as the simulator happened to read them) and the simulator answers on stdin with
# {"i2c_r": [seq, "<hex>" or null]}; null (or no answer within _I2C_TIMEOUT_MS) is a NACK
# (OSError, as machine.I2C raises on the board). Feed lines arriving meanwhile are taken.
# Coil changes are reported on stdout as {"outputs": [..]} so the simulator can show a sounder.
# End of stdin means the simulator is gone: the node exits rather than run orphaned.
#
# The watchdog is main.py's (a software one on this port: the process dies when it is not fed in
# time and the simulator's supervisor restarts it, as a reset would), handed over by
# hal.make() and fed by wdt_feed().
# data/node.json may hold "adc_delay_ms": a converter that takes that long per reading (a test
# knob for slow samples); the wait goes through wait_ms(), which keeps the node on the bus.

import binascii
import gc
import json
import select
import sys
import termios
import time

import micropython
from micropython import const

EXIT_REBOOT = 75  # the simulator's supervisor restarts a node that exits with this code
# The simulator's answer to one transfer phase. A board's transfer takes about a millisecond;
# the simulator is a Python thread on a shared machine and can be scheduled late, which a chip
# never is, so the wait is generous: only a simulator that is gone makes it a NACK.
_I2C_TIMEOUT_MS = const(1000)


class Hal:
    def __init__(self, root, node_cfg, wdt=None):
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
        self._feed_poll = select.poll()  # stdin alone: waiting for an I2C answer
        self._feed_poll.register(sys.stdin, select.POLLIN)
        self._adc = {}
        self._i2c_seq = 0
        self._i2c_reply = None  # [seq, hex or None] from the simulator
        self._sensor_uart = {}
        self.wdt_feeds = 0
        self._wdt = wdt  # main.py's SoftWatchdog (None: no watchdog, a bare REPL session)
        self.peak_alloc = 0
        self.on_idle = None  # set by the node: called with a timeout while the HAL waits
        self._adc_delay_ms = node_cfg.get("adc_delay_ms", 0)
        # Sensors are powered before the application starts on a real board: wait (briefly)
        # for the simulator's first snapshot so the first sample is not of unpowered inputs.
        for _ in range(50):
            if self._adc or self._sensor_uart:
                break
            for obj, _event in self._poll.poll(100):
                if obj is not self._uart:
                    self._read_feed()

    # -- Modbus UART --------------------------------------------------------------------
    def uart_wait(self, timeout_ms):
        """Wait up to timeout_ms for UART bytes, like a UART: True when bytes are there, False
        only once the whole timeout has passed. Sensor feed lines are consumed on the way and
        do not end the wait (a board has no such wake-up, and a loop that relied on one would
        starve its watchdog on the board)."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            for obj, _event in self._poll.poll(timeout_ms):
                if obj is self._uart:
                    return True
                self._read_feed()
            timeout_ms = time.ticks_diff(deadline, time.ticks_ms())
            if timeout_ms <= 0:
                return False

    def uart_readinto(self, buf):
        n = self._uart.readinto(buf)
        return n or 0

    def uart_write(self, data):
        self._uart.write(data)

    # -- sensors ------------------------------------------------------------------------
    def adc(self, channel):
        if self._adc_delay_ms:
            self.wait_ms(self._adc_delay_ms)
        return self._adc.get(channel, 0)

    def wait_ms(self, ms):
        """A peripheral's delay (conversion, execution time): the node keeps the bus meanwhile."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return
            if self.on_idle is not None:
                self.on_idle(left)
            else:
                time.sleep_ms(left)

    def sensor_uart_read(self, name):
        data = self._sensor_uart.get(name)
        if not data:
            return b""
        self._sensor_uart[name] = b""
        return data

    def i2c_write(self, addr, cmd):
        self._i2c(addr, cmd, 0)

    def i2c_read(self, addr, cmd, n):
        self._i2c(addr, cmd, 0)
        time.sleep_ms(1)  # the command's execution time, as on the board
        return self._i2c(addr, cmd, n)

    def _i2c(self, addr, cmd, n):
        """One transfer phase, answered by the simulator's chip; OSError(ENODEV) on a NACK."""
        self._i2c_seq = seq = (self._i2c_seq + 1) & 0xFFFF
        self._i2c_reply = None
        print('{"i2c":[%d,%d,%d,%d,%d]}' % (seq, addr, cmd, n, time.ticks_ms()))
        deadline = time.ticks_add(time.ticks_ms(), _I2C_TIMEOUT_MS)
        while True:
            reply = self._i2c_reply
            if reply is not None and reply[0] == seq:
                if reply[1] is None:
                    break
                return binascii.unhexlify(reply[1])
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            # UART bytes wait in the pty for the loop, as in the UART's FIFO on the board
            if self._feed_poll.poll(left):
                self._read_feed()
        raise OSError(19)  # ENODEV: no acknowledge

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
        reply = snap.get("i2c_r")
        if reply is not None:
            self._i2c_reply = reply
            return
        for name, hexdata in snap.get("uart", {}).items():
            if hexdata:
                self._sensor_uart[name] = self._sensor_uart.get(name, b"") \
                    + binascii.unhexlify(hexdata)

    def _diag(self):
        gc.collect()
        print(json.dumps({"diag": {"peak_alloc": self.peak_alloc, "alloc": gc.mem_alloc(),
                                   "free": gc.mem_free()}}))
        micropython.mem_info()
        micropython.qstr_info()  # interned names: their pools grow by doubling (docs)

    # -- outputs, watchdog, reset -------------------------------------------------------
    def set_outputs(self, coils):
        print(json.dumps({"outputs": list(coils)}))

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()
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
