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
import time

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from gateway.bus import BadReply, Garbled, ModbusBus, ModbusError, NoResponse, PortLost
from hardware.serialline import allow_parity_on_ptys, t35, tighten_timer_slack

__all__ = ["BadReply", "Garbled", "ModbusError", "NoResponse", "PortLost", "RtuBus"]

log = logging.getLogger(__name__)


async def _sleep_until(deadline: float) -> None:
    """Sleep until a perf_counter deadline with ~0.1 ms precision.

    The event loop's timers round up to whole milliseconds (epoll), which would stretch a 1.75 ms
    gap to 2-3 ms and cost 10-30 % of a 115200-baud bus. Sleep on the loop while more than
    1.2 ms remain, then block for the rest (at most ~1.2 ms).
    """
    remaining = deadline - time.perf_counter()
    if remaining > 0.0012:
        await asyncio.sleep(remaining - 0.0012)
        remaining = deadline - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)


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
        # reconnect_delay=0: pymodbus does not reconnect on its own; the poller owns that, so a
        # vanished adapter is reported once and re-opened on the poller's schedule.
        self._client = AsyncModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, parity=parity, bytesize=8,
            stopbits=stopbits, timeout=timeout, retries=retries, reconnect_delay=0,
            trace_packet=self._on_packet)
        self._idle_since = 0.0
        # A reply is one burst (gaps < t1.5 on the wire); 50 ms of quiet after bytes that made
        # no frame means the frame will never complete: generous for a loaded host's pty or a
        # USB adapter's latency timer (16 ms), still 10x shorter than the reply timeout.
        self.garble_gap_s = max(0.05, 20 * self._gap)

    def describe(self) -> str:
        return f"serial port {self.port}"

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus' packet hook: the silent interval runs from the last byte on the wire, not
        # from when pymodbus has finished decoding the reply.
        if not sending:
            self._idle_since = time.perf_counter()
            self._heard(len(data))
        return data

    async def connect(self) -> None:
        tighten_timer_slack()  # the event-loop thread times the t3.5 gaps
        await super().connect()

    async def _before(self) -> None:
        await _sleep_until(self._idle_since + self._gap)

    def _after_failure(self) -> None:
        self._idle_since = time.perf_counter()  # a timeout: the line has been quiet
