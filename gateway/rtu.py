"""The gateway's side of one RS-485 bus: a coordinator that owns the serial port.

One transaction at a time per bus (a multi-drop bus has one talker at a time), and the Modbus
serial-line rule the master must keep: at least t3.5 of silence between the end of one frame and
the start of the next. pymodbus does the framing and CRC; this class adds the bus discipline and
translates pymodbus' results into two exceptions that carry the protocol's own reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from hardware.serialline import allow_parity_on_ptys, t35, tighten_timer_slack

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR, with a dump of the last 20 frames. Its failures are
# translated below into NoResponse / ModbusError and the poller logs them once per change of a
# node's state, so a dead node does not fill the Pi's journal every back-off period.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


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


class ModbusError(Exception):
    """The node answered with a Modbus exception (code 1-4, or another the node sent)."""

    def __init__(self, device: int, function: int, code: int):
        super().__init__(f"device {device}: function {function:#04x} "
                         f"answered exception {code:#04x}")
        self.device = device
        self.function = function
        self.code = code


class NoResponse(Exception):
    """No valid reply: timeout, CRC error, garbled frame, dead or absent node."""

    def __init__(self, device: int, detail: str):
        super().__init__(f"device {device}: no valid response ({detail})")
        self.device = device


class RtuBus:
    """Modbus RTU master for one serial bus (a pty in tests, /dev/ttyUSB0 on the Pi)."""

    def __init__(self, port: str, baudrate: int = 19200, parity: str = "E",
                 timeout: float = 0.5, retries: int = 0):
        allow_parity_on_ptys()
        self.port = port
        self.baudrate = baudrate
        self._gap = t35(baudrate)
        self._client = AsyncModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, parity=parity, bytesize=8,
            stopbits=1, timeout=timeout, retries=retries, trace_packet=self._on_packet)
        self._lock = asyncio.Lock()
        self._idle_since = 0.0
        self.transactions = 0
        self.failures = 0

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus' packet hook: the silent interval runs from the last byte on the wire, not
        # from when pymodbus has finished decoding the reply.
        if not sending:
            self._idle_since = time.perf_counter()
        return data

    async def connect(self) -> None:
        tighten_timer_slack()  # the event-loop thread times the t3.5 gaps
        if not await self._client.connect():
            raise ConnectionError(f"cannot open serial port {self.port}")

    def close(self) -> None:
        self._client.close()

    async def __aenter__(self) -> RtuBus:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _call(self, device: int, function: int, coro_fn: Any, *args: Any,
                    **kwargs: Any) -> Any:
        async with self._lock:
            await _sleep_until(self._idle_since + self._gap)
            try:
                result = await coro_fn(*args, device_id=device, **kwargs)
            except ModbusException as exc:
                self.failures += 1
                self._idle_since = time.perf_counter()  # a timeout: the line has been quiet
                raise NoResponse(device, str(exc)) from None
            finally:
                self.transactions += 1
        if result.isError():
            code = getattr(result, "exception_code", 0)
            self.failures += 1
            if code:
                raise ModbusError(device, function, code)
            raise NoResponse(device, str(result))
        return result

    async def read_input(self, device: int, address: int, count: int) -> list[int]:
        rr = await self._call(device, 4, self._client.read_input_registers, address, count=count)
        return list(rr.registers)

    async def read_holding(self, device: int, address: int, count: int) -> list[int]:
        rr = await self._call(device, 3, self._client.read_holding_registers, address,
                              count=count)
        return list(rr.registers)

    async def write_register(self, device: int, address: int, value: int) -> None:
        await self._call(device, 6, self._client.write_register, address, value)

    async def write_registers(self, device: int, address: int, values: list[int]) -> None:
        await self._call(device, 16, self._client.write_registers, address, values)

    async def read_coils(self, device: int, address: int, count: int) -> list[bool]:
        rr = await self._call(device, 1, self._client.read_coils, address, count=count)
        return list(rr.bits[:count])

    async def write_coil(self, device: int, address: int, value: bool) -> None:
        await self._call(device, 5, self._client.write_coil, address, value)
