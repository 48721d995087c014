"""The bus-coordinator interface the poller uses, and the exceptions it translates to.

One :class:`ModbusBus` owns one Modbus link (an RS-485 port, :class:`gateway.rtu.RtuBus`, or a
Modbus TCP connection, :class:`gateway.tcp.TcpBus`): one transaction at a time, and every result
of pymodbus translated once, here, into five exceptions that carry the protocol's reason:

- :class:`ModbusError`: the node answered with a Modbus exception (it is alive).
- :class:`NoResponse`: no reply at all: silence until the timeout (a dead or absent node, or a
  request the node never understood).
- :class:`Garbled` (a :class:`NoResponse`): bytes came back but no valid frame (CRC error, noise
  on the line). The node is alive; its bytes arrived. On a serial bus this is known, not at the
  timeout, but as soon as the reply's expected length has arrived with a bad CRC (the request
  says how long its answer is), or else once the line has been quiet ``garble_gap_s`` after the
  last byte (a reply cut short, a garbled length byte); so a retry costs milliseconds.
- :class:`BadReply`: a reply that is valid on the wire but not an answer to the request (wrong
  function code, wrong register count). pymodbus does not check these; a node that does this is
  that node's protocol fault, never a reason to decode garbage or to crash.
- :class:`PortLost`: the link itself is gone (USB adapter unplugged, TCP peer unreachable). The
  poller closes the bus and reconnects; the other buses never notice.

Per-device timeouts: each call may carry its own reply timeout (a device's ``poll.timeout_s``);
the bus default applies otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Self

from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerRTU

__all__ = ["BadReply", "Garbled", "ModbusBus", "ModbusError", "NoResponse", "PortLost",
           "reply_bytes"]

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR, with a dump of the last 20 frames. Its failures are
# translated below and the poller logs them once per change of a node's state, so a dead node
# does not fill the Pi's journal every back-off period.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


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


class Garbled(NoResponse):
    """Bytes arrived but they were no valid reply (CRC error, noise): the node is alive."""

    def __init__(self, device: int, heard: int):
        super().__init__(device, f"garbled reply: {heard} byte(s) without a valid frame")
        self.heard = heard


class BadReply(Exception):
    """A well-formed frame that does not answer the request (function code, register count)."""

    def __init__(self, device: int, function: int, detail: str):
        super().__init__(f"device {device}: bad reply to function {function:#04x} ({detail})")
        self.device = device
        self.function = function


class PortLost(Exception):
    """The link is not open: the serial port vanished or the TCP peer cannot be reached."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where = where


class ModbusBus:
    """What the poller needs from a bus. Subclasses build ``self._client`` and ``describe``."""

    _client: Any
    #: Quiet time after received bytes that ends a reply with no valid frame (None: the link
    #: has no such notion, e.g. TCP). Subclasses report received bytes through :meth:`_heard`.
    garble_gap_s: float | None = None
    #: Seconds one character takes on the wire (0: not a serial line): how much longer a
    #: longer answer takes to arrive.
    char_s: float = 0.0

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self.transactions = 0
        self.failures = 0
        self.garbled = 0
        self._heard_bytes = 0
        self._request: asyncio.Future[Any] | None = None
        self._gap_timer: asyncio.Handle | None = None
        self._cut_short = False
        self._expect = 0  # bytes of the answer the request in progress asks for (0: unknown)
        self.garbled_at_length = 0  # replies cut as garbled at their full length (bad CRC)

    def _heard(self, received: bytes) -> None:
        """Bytes arrived (the event-loop thread, before pymodbus frames them; ``received`` is
        everything not yet framed). While a request waits: a reply of the expected length whose
        CRC is wrong is garbled now (no later byte can make it valid); anything else re-arms the
        garble timer, and when that runs out before a valid frame completes the request, it is
        cut short."""
        self._heard_bytes += len(received)
        if self.garble_gap_s is None or self._request is None or self._request.done():
            return
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        loop = asyncio.get_running_loop()
        expect = self._expect
        if expect and len(received) >= expect and not _crc_ok(received[:expect]):
            self.garbled_at_length += 1
            self._gap_timer = loop.call_soon(self._cut_garbled)
            return
        self._gap_timer = loop.call_later(self.garble_gap_s, self._cut_garbled)

    def _cut_garbled(self) -> None:
        if self._request is not None and not self._request.done():
            self._cut_short = True
            self._request.cancel()

    # -- the link, in subclasses -----------------------------------------------------------
    def describe(self) -> str:
        raise NotImplementedError

    async def connect(self) -> None:
        """Open the link; raises :class:`PortLost` when it cannot be opened."""
        try:
            ok = await self._client.connect()
        except OSError as exc:
            raise PortLost(self.describe(), f"cannot open: {exc}") from None
        if not ok:
            raise PortLost(self.describe(), "cannot open")

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    def close(self) -> None:
        self._client.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _before(self) -> None:
        """Called under the lock before each request (RTU: the t3.5 silent interval)."""

    def _after_failure(self) -> None:
        """Called under the lock after a request without a reply."""

    def _request_over(self) -> None:
        """Called under the lock when a request ends, however it ended."""

    # -- one transaction ----------------------------------------------------------------------
    async def _call(self, device: int, function: int, coro_fn: Any, *args: Any,
                    timeout: float | None = None, expect: int = 0, **kwargs: Any) -> Any:
        async with self._lock:
            if not self.connected:
                raise PortLost(self.describe(), "not open")
            await self._before()
            # pymodbus reads its reply timeout from comm_params at each request; the lock
            # makes setting it per request safe (one transaction at a time).
            self._client.ctx.comm_params.timeout_connect = timeout or self.timeout
            self._heard_bytes, self._cut_short, self._expect = 0, False, expect
            self._request = request = asyncio.ensure_future(
                coro_fn(*args, device_id=device, **kwargs))
            try:
                result = await request
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._cut_short or (task is not None and task.cancelling()):
                    raise  # cancelled from outside (the gateway stops): not a bus fault
                self.failures += 1
                self.garbled += 1
                self._after_failure()
                raise Garbled(device, self._heard_bytes) from None
            except ConnectionException as exc:
                self.failures += 1
                self._after_failure()
                raise PortLost(self.describe(), str(exc)) from None
            except ModbusException as exc:
                self.failures += 1
                self._after_failure()
                if not self.connected:
                    raise PortLost(self.describe(), str(exc)) from None
                if self._heard_bytes:
                    self.garbled += 1
                    raise Garbled(device, self._heard_bytes) from None
                raise NoResponse(device, str(exc)) from None
            finally:
                self.transactions += 1
                if not request.done():
                    request.cancel()
                self._request_over()
                self._request = None
                if self._gap_timer is not None:
                    self._gap_timer.cancel()
                    self._gap_timer = None
        if result.isError():
            code = getattr(result, "exception_code", 0)
            self.failures += 1
            if code:
                raise ModbusError(device, function, code)
            raise NoResponse(device, str(result))
        if result.function_code != function:
            self.failures += 1
            raise BadReply(device, function, f"answered function {result.function_code:#04x}")
        return result

    async def read_input(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[int]:
        rr = await self._call(device, 4, self._client.read_input_registers, address,
                              count=count, timeout=timeout, expect=reply_bytes(4, count))
        return self._registers(device, 4, rr, count)

    async def read_holding(self, device: int, address: int, count: int,
                           timeout: float | None = None) -> list[int]:
        rr = await self._call(device, 3, self._client.read_holding_registers, address,
                              count=count, timeout=timeout, expect=reply_bytes(3, count))
        return self._registers(device, 3, rr, count)

    def _registers(self, device: int, function: int, rr: Any, count: int) -> list[int]:
        registers = list(rr.registers)
        if len(registers) != count:
            self.failures += 1
            raise BadReply(device, function, f"{len(registers)} registers for {count} asked")
        return registers

    async def write_register(self, device: int, address: int, value: int,
                             timeout: float | None = None) -> None:
        rr = await self._call(device, 6, self._client.write_register, address, value,
                              timeout=timeout, expect=reply_bytes(6))
        self._echo(device, 6, "value", (rr.address, rr.registers[0]), (address, value))

    async def write_registers(self, device: int, address: int, values: list[int],
                              timeout: float | None = None) -> None:
        rr = await self._call(device, 16, self._client.write_registers, address, values,
                              timeout=timeout, expect=reply_bytes(16))
        self._echo(device, 16, "count", (rr.address, rr.count), (address, len(values)))

    def _echo(self, device: int, function: int, what: str, got: tuple[int, int],
              sent: tuple[int, int]) -> None:
        """A write's answer echoes its address and value (or count). One that echoes another
        write is not this write's answer: a late answer to an earlier request, or a fault."""
        if got != sent:
            self.failures += 1
            raise BadReply(device, function, f"echoed address {got[0]} {what} {got[1]} for "
                                             f"address {sent[0]} {what} {sent[1]}")

    async def read_coils(self, device: int, address: int, count: int,
                         timeout: float | None = None) -> list[bool]:
        rr = await self._call(device, 1, self._client.read_coils, address, count=count,
                              timeout=timeout, expect=reply_bytes(1, count))
        bits = list(rr.bits)
        if len(bits) < count:
            self.failures += 1
            raise BadReply(device, 1, f"{len(bits)} coils for {count} asked")
        return bits[:count]

    async def write_coil(self, device: int, address: int, value: bool,
                         timeout: float | None = None) -> None:
        rr = await self._call(device, 5, self._client.write_coil, address, value,
                              timeout=timeout, expect=reply_bytes(5))
        self._echo(device, 5, "value", (rr.address, int(rr.bits[0])), (address, int(value)))


def reply_bytes(function: int, count: int = 0) -> int:
    """The length of a normal RTU answer to a request (address, PDU, CRC): register reads
    5 + 2 per register, coil reads 5 + 1 per 8 coils, single and multiple writes 8."""
    if function in (3, 4):
        return 5 + 2 * count
    if function == 1:
        return 5 + (count + 7) // 8
    return 8


def _crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big") == frame[-2:]
