"""The gateway's side of one RS-485 bus: a coordinator that owns the serial port.

One transaction at a time per bus (a multi-drop bus has one talker at a time), and the Modbus
serial-line rule the master must keep: at least t3.5 of silence between the end of one frame and
the start of the next. pymodbus does the framing and CRC; :class:`~gateway.bus.ModbusBus` checks
the replies and translates pymodbus' results; this class adds the serial port (baud rate, parity,
stop bits) and the bus discipline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from gateway.bus import BadReply, Garbled, ModbusBus, ModbusError, NoResponse, PortLost
from gateway.looptimer import LoopTimer
from hardware.serialline import allow_parity_on_ptys, char_time, t35, tighten_timer_slack

__all__ = ["BadReply", "Garbled", "ModbusError", "NoResponse", "PortLost", "RtuBus"]

log = logging.getLogger(__name__)


#: How long before the end of the silent interval the loop's timer hands the built frame to the
#: port: the timer's wake-up (0.05-0.09 ms measured on the development VM) lands inside it and
#: the write spins out the rest, so the frame leaves within microseconds of t3.5.
_SEND_EARLY_S = 0.00015


class RtuBus(ModbusBus):
    """Modbus RTU master for one serial bus (a pty in tests, /dev/ttyUSB0 on the Pi)."""

    def __init__(self, port: str, baudrate: int = 19200, parity: str = "E",
                 timeout: float = 0.5, retries: int = 0, stopbits: int = 1):
        super().__init__(timeout)
        allow_parity_on_ptys()
        self.port = port
        self.baudrate = baudrate
        self.stopbits = stopbits
        self._gap = t35(baudrate)
        self.char_s = char_time(baudrate)
        # reconnect_delay=0: pymodbus does not reconnect on its own; the poller owns that, so a
        # vanished adapter is reported once and re-opened on the poller's schedule.
        self._client = AsyncModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, parity=parity, bytesize=8,
            stopbits=stopbits, timeout=timeout, retries=retries, reconnect_delay=0,
            trace_packet=self._on_packet)
        self._idle_since = 0.0
        self._read_at = 0.0  # when the loop last found reply bytes waiting (_stamp_reads)
        self._timer: LoopTimer | None = None
        self.requests_sent = 0
        # A reply is one burst (gaps < t1.5 on the wire); 50 ms of quiet after bytes that made
        # no frame means the frame will never complete: generous for a loaded host's pty or a
        # USB adapter's latency timer (16 ms), still 10x shorter than the reply timeout.
        self.garble_gap_s = max(0.05, 20 * self._gap)

    def describe(self) -> str:
        return f"serial port {self.port}"

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus' packet hook: the silent interval runs from the last byte on the wire, not
        # from when pymodbus has finished decoding the reply: from when the loop saw the bytes
        # waiting (_stamp_reads), or from now where that is not known.
        if not sending:
            self._idle_since = self._read_at or time.perf_counter()
            self._read_at = 0.0
            self._heard(data)
        return data

    async def connect(self) -> None:
        tighten_timer_slack()  # the event-loop thread times the t3.5 gaps
        await super().connect()
        self._stamp_reads(self._client.ctx.transport)
        self._write_at_the_gap(self._client.ctx.transport)
        if self._timer is None:
            self._timer = LoopTimer.create()

    def close(self) -> None:
        super().close()
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _stamp_reads(self, transport: Any) -> None:
        """Note when the event loop found reply bytes waiting, before pyserial reads them.

        The reply's last byte was on the wire no later than that; the silent interval before
        the next request runs from there. Stamped in the packet hook instead, it ran from after
        pyserial's read (a select() and a read() in Python) and pymodbus' first steps: ~45 us
        later on every transaction, measured against the bus hub's delivery times at 115200
        baud, added to the gap for nothing."""
        read_ready = transport.intern_read_ready

        def stamped() -> None:
            self._read_at = time.perf_counter()
            read_ready()

        transport.intern_read_ready = stamped
        if transport.poll_task is None:  # else pymodbus polls, through the attribute
            # the loop keeps the callback it was given: hand it the stamped one
            transport.async_loop.add_reader(transport.sync_serial.fileno(), stamped)

    def _write_at_the_gap(self, transport: Any) -> None:
        """Send each request on the wire the moment the silent interval has passed.

        pymodbus' SerialTransport.write only queues the frame and asks the event loop for
        writability, so the frame left one loop turn after pymodbus built it, itself a loop
        turn (the request task) after the gap had passed: 0.2-0.4 ms lost per transaction at
        115200 baud, measured. This replaces only that method, on this bus' transport: the frame
        pymodbus has built is held until ``_SEND_EARLY_S`` before the end of t3.5 on the bus'
        timerfd (gateway/looptimer.py; the loop runs on meanwhile), then written to the port's
        non-blocking file descriptor the moment t3.5 has passed. What the kernel does not take
        goes through pymodbus' own queued write, as before. Framing, CRC, the reply parser and
        the transaction logic stay pymodbus'.

        Before, the loop slept on its own timers until 1.2 ms before the gap's end and the
        write blocked for the rest; asyncio's timers round up to whole milliseconds (epoll), so
        a master that spent 0.5 ms on a reply (the OTA sender) woke with 0.25 ms left and 0.2 ms
        of pymodbus still to run, and was late on most chunks; and every frame waited through
        two wake-ups after the reply, not one, each a chance to be scheduled late on a busy
        host.
        """
        fd = transport.sync_serial.fileno()
        queued_write = transport.write

        def send(frame: bytes) -> None:
            if transport.sync_serial is None:
                return  # the port closed while the frame waited: pymodbus fails the request
            deadline = self._idle_since + self._gap
            while time.perf_counter() < deadline:
                pass  # at most _SEND_EARLY_S, less the timer's wake-up
            try:
                sent = os.write(fd, frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # let pymodbus' write path meet the error and close the port
            self.requests_sent += 1
            # The line is ours until the frame has left the wire; no reply (a broadcast, a dead
            # node) still leaves the next request t3.5 after that, not after our write call.
            self._idle_since = time.perf_counter() + len(frame) * char_time(self.baudrate)
            if sent < len(frame):
                queued_write(frame[sent:])

        def write(frame: bytes) -> None:
            wake = self._idle_since + self._gap - _SEND_EARLY_S
            timer = self._timer
            if timer is not None and wake > time.perf_counter() and timer.arm(
                    wake, lambda: send(frame)):
                return
            remaining = self._idle_since + self._gap - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)  # no timerfd: the loop slept the whole milliseconds
            send(frame)

        transport.write = write

    async def _before(self) -> None:
        """Without a timerfd (not Linux), sleep on the event loop through the whole
        milliseconds of the silent interval; the write blocks for the rest (at most one)."""
        if self._timer is not None:
            return  # the write holds the frame until the gap's end (see _write_at_the_gap)
        whole_ms = int((self._idle_since + self._gap - time.perf_counter()) * 1000)
        if whole_ms > 0:
            await asyncio.sleep(whole_ms / 1000)

    def _request_over(self) -> None:
        # A request that ended before its frame went out (cancelled while t3.5 ran) must not
        # reach the wire later.
        if self._timer is not None and self._timer.pending:
            self._timer.disarm()

    def _after_failure(self) -> None:
        self._idle_since = time.perf_counter()  # a timeout: the line has been quiet
