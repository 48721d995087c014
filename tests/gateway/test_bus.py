"""The bus coordinators against peers this project did not write: pymodbus' own Modbus TCP server,
and the serial port settings as the kernel holds them."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import termios
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.bus import ModbusError
from gateway.config import validate_config
from gateway.service import Gateway
from gateway.tcp import TcpBus
from hardware.regmap import load_maps
from tests.gateway.mosquitto import Broker, Subscriber, free_port

UNIT = 7
T = TypeVar("T")


def run_async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async test in its own event loop (the project has no pytest-asyncio)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


def flood_node_inputs(level_m: float) -> list[int]:
    """A flood gauge's input registers as the register map lays them out, identity block first."""
    cmap = load_maps().classes["flood"]
    words = [0] * cmap.input_count
    values = {"map_version": 1, "device_class": cmap.class_id, "fw_major": 0, "fw_minor": 1,
              "fw_patch": 0, "level": level_m}
    for reg in cmap.input:
        if reg.name in values:
            words[reg.address:reg.address + reg.width] = reg.encode(values[reg.name])
    return words


@asynccontextmanager
async def tcp_node(port: int, level_m: float = 1.25) -> AsyncIterator[None]:
    """pymodbus' own server with one unit that looks like one of our flood gauges: four
    separate tables (coils, discrete inputs, holding, input registers), as our nodes have."""
    regs = DataType.REGISTERS
    unit = SimDevice(id=UNIT, simdata=(
        [SimData(0, values=[0] * 8, datatype=DataType.BITS)],  # coils
        [SimData(0, values=[0] * 8, datatype=DataType.BITS)],  # discrete inputs
        [SimData(0, values=[0] * 16, datatype=regs)],  # holding registers
        [SimData(0, values=flood_node_inputs(level_m), datatype=regs)],  # input registers
    ))
    server = ModbusTcpServer(unit, address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    try:
        for _ in range(100):
            if server.transport is not None:
                break
            await asyncio.sleep(0.02)
        yield
    finally:
        await server.shutdown()
        task.cancel()


@run_async
async def test_a_modbus_tcp_node_answers_through_the_same_bus_interface() -> None:
    port = free_port()
    async with tcp_node(port), TcpBus("127.0.0.1", port, timeout=1.0) as bus:
        words = await bus.read_input(UNIT, 0, 16)
        assert words[:5] == [1, load_maps().classes["flood"].class_id, 0, 1, 0]
        await bus.write_coil(UNIT, 0, True)
        assert (await bus.read_coils(UNIT, 0, 1)) == [True]
        with pytest.raises(ModbusError):  # past the served block: the server says so
            await bus.read_holding(UNIT, 500, 2)


@run_async
async def test_the_gateway_publishes_a_modbus_tcp_gauge_like_an_rs485_one(
        tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    config = validate_config(f"""
[gateway]
id = "gw-tcp"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false

[[bus]]
name = "canal-plc"
type = "tcp"
host = "127.0.0.1"
port = {port}
timeout_s = 1.0

[[bus.device]]
address = {UNIT}
class = "flood"
id = "canal-7"
poll = {{ telemetry_ms = 500 }}
""")
    async with tcp_node(port, level_m=1.25):
        with Subscriber(broker, "edgefleet/v1/gw-tcp/canal-7/#") as sub:
            stop = asyncio.Event()
            run = asyncio.create_task(Gateway(config).run(stop))
            try:
                for _ in range(200):
                    if any(m.topic.endswith("/telemetry") for m in sub.messages):
                        break
                    assert not run.done(), run.exception()
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.wait_for(run, 10)
    telemetry = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/telemetry")]
    assert telemetry and telemetry[0]["values"]["level"] == pytest.approx(1.25)
    state = [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/state")]
    assert state[0]["online"] is True and state[0]["firmware"] == "0.1.0"


@pytest.mark.parametrize("stopbits", [1, 2])
@run_async
async def test_stopbits_from_the_config_reach_the_serial_port(tmp_path: Path,
                                                              stopbits: int) -> None:
    master, slave = os.openpty()
    try:
        config = validate_config(f"""
[gateway]
id = "gw-sb"
storage = "{tmp_path / 'state'}"

[mqtt]
host = "127.0.0.1"
tls = false

[[bus]]
name = "riser"
type = "rtu"
port = "{os.ttyname(slave)}"
parity = "N"
stopbits = {stopbits}
""")
        poller = Gateway(config).pollers["riser"]
        await poller.bus.connect()
        try:
            cflag = termios.tcgetattr(slave)[2]
            assert bool(cflag & termios.CSTOPB) is (stopbits == 2)
        finally:
            poller.bus.close()
    finally:
        os.close(master)
        os.close(slave)


def _crc(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


REPLY = bytes.fromhex("01040400010002")  # node 1, FC04, 2 registers: 1, 2


async def node_booted(bus: Any, tries: int = 50) -> None:
    """Wait until node 1 answers a read (a simulated node takes a second or two to boot)."""
    from gateway.bus import BadReply, NoResponse

    for _ in range(tries):
        try:
            await bus.read_input(1, 0, 1)
            return
        except (NoResponse, BadReply):
            await asyncio.sleep(0.2)
    raise AssertionError(f"node 1 did not answer within {tries} tries")


@pytest.mark.parametrize(("mode", "frame", "expected"), [
    ("short", REPLY + _crc(REPLY), bytes.fromhex("0104020001")),
    ("function", REPLY + _crc(REPLY), bytes.fromhex("01030400010002")),
    # not a register read, or a frame already damaged: passed on unchanged
    ("short", bytes.fromhex("0105000000ff") + _crc(bytes.fromhex("0105000000ff")), None),
    ("short", REPLY + b"\0\0", None),
    # a write's echo: the next address, as a late answer to another write would read
    ("echo", bytes.fromhex("011003e8007a") + _crc(bytes.fromhex("011003e8007a")),
     bytes.fromhex("011003e9007a")),
    ("echo", bytes.fromhex("01060000ffff") + _crc(bytes.fromhex("01060000ffff")),
     bytes.fromhex("01060001ffff")),
    ("echo", REPLY + _crc(REPLY), None),  # a read is not a write
])
def test_the_simulators_bad_reply_fault_keeps_a_valid_crc(mode: str, frame: bytes,
                                                          expected: bytes | None) -> None:
    from hardware.sim.bushub import bad_reply

    out = bad_reply(frame, mode)
    if expected is None:
        assert out == frame
    else:
        assert out == expected + _crc(expected)


@pytest.mark.parametrize(("mode", "detail"), [("short", "15 registers for 16 asked"),
                                              ("function", "answered function 0x03")])
@run_async
async def test_a_reply_that_does_not_answer_the_request_is_a_bad_reply(
        mode: str, detail: str) -> None:
    from gateway.bus import BadReply
    from gateway.rtu import RtuBus
    from hardware.sim.simbus import SimBus

    sim = SimBus([(1, "fire")])
    sim.start()
    try:
        async with RtuBus(sim.master_path, timeout=0.5) as bus:
            await node_booted(bus)
            sim.hub.faults.bad_replies[1] = mode
            with pytest.raises(BadReply, match=detail):
                await bus.read_input(1, 0, 16)
            sim.hub.faults.bad_replies.clear()
            assert len(await bus.read_input(1, 0, 16)) == 16
    finally:
        sim.stop()


@run_async
async def test_a_write_answered_with_another_writes_echo_is_a_bad_reply() -> None:
    """A write's answer echoes its address and value (FC05/06) or count (FC15/16). An echo of
    another write, such as a late answer to an earlier request, does not say that this write
    was done; and the bus goes on with the next request."""
    from gateway.bus import BadReply
    from gateway.rtu import RtuBus
    from hardware.sim.simbus import SimBus

    sim = SimBus([(1, "fire")])
    sim.start()
    try:
        async with RtuBus(sim.master_path, timeout=0.5) as bus:
            await node_booted(bus)
            failures = bus.failures
            sim.hub.faults.bad_replies[1] = "echo"
            with pytest.raises(BadReply, match="echoed address 1 value 0 for address 0 value 0"):
                await bus.write_register(1, 0, 0)  # command register: 0 does nothing
            with pytest.raises(BadReply, match="echoed address 1 value 0 for address 0 value 0"):
                await bus.write_coil(1, 0, False)
            sim.hub.faults.bad_replies.clear()
            await bus.write_register(1, 0, 0)
            await bus.write_coil(1, 0, False)
            assert bus.failures == failures + 2
    finally:
        sim.stop()


@pytest.mark.parametrize("baud", [19200, 115200])
@run_async
async def test_the_gateway_keeps_the_silent_interval_before_every_request(baud: int) -> None:
    """The master sends each request straight to the port as soon as t3.5 has passed since the
    reply (for speed at 115200), but never sooner: the bus hub measures every silence it kept."""
    from gateway.rtu import RtuBus
    from hardware.serialline import t35
    from hardware.sim.simbus import SimBus

    sim = SimBus([(1, "fire")], baud=baud)
    sim.start()
    try:
        async with RtuBus(sim.master_path, baud, timeout=2.0) as bus:
            await node_booted(bus)
            for _ in range(150):
                assert len(await bus.read_holding(1, 0, 10)) == 10
        assert bus.requests_sent >= 150  # every request took the direct write
        assert sim.hub.stats.min_gap_s[0] >= t35(baud), sim.hub.stats.min_gap_s
    finally:
        sim.stop()


@run_async
async def test_a_request_cancelled_while_the_line_is_silent_never_reaches_the_wire() -> None:
    """The master holds a built frame until t3.5 has passed (on a timer, the loop runs on); a
    request cancelled meanwhile (the gateway stopping, a poll task cancelled) must not go out
    later, into a silence some other transaction now owns."""
    from gateway.rtu import NoResponse, RtuBus

    far, near = os.openpty()   # near: the master's port; far: the line
    os.set_blocking(far, False)
    try:
        # 1200 baud: t3.5 is 32 ms, a window wide enough to cancel in on a busy host
        async with RtuBus(os.ttyname(near), 1200, timeout=0.05) as bus:
            with pytest.raises(NoResponse):
                await bus.read_holding(1, 0, 10)   # silence: the line is quiet from now on
            await asyncio.sleep(0.01)
            heard = os.read(far, 64)
            assert len(heard) == 8   # the first request, once
            request = asyncio.ensure_future(bus.read_holding(1, 0, 10))
            await asyncio.sleep(0.005)   # inside the 32 ms of silence
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            await asyncio.sleep(0.1)   # well past where the frame was due
            with pytest.raises(BlockingIOError):
                os.read(far, 64)
            assert bus.requests_sent == 1
    finally:
        os.close(far)
        os.close(near)


@run_async
async def test_a_slow_read_of_the_reply_does_not_delay_the_next_request() -> None:
    """t3.5 runs from when the reply's bytes were waiting at the port, not from when the
    master had finished reading them: on a loaded Pi the read itself (pyserial, pymodbus) can
    be late, and that lateness is not silence the bus needs. A 0.1 s read at 300 baud (t3.5 =
    128 ms): the next request is due 128 ms after the reply, not 228."""
    import time

    from gateway.rtu import RtuBus
    from hardware.serialline import t35

    far, near = os.openpty()   # near: the master's port; far: the line
    os.set_blocking(far, False)

    async def heard(count: int) -> tuple[bytes, float]:
        got = b""
        while len(got) < count:
            await asyncio.sleep(0.001)
            try:
                got += os.read(far, 64)
            except BlockingIOError:
                pass
        return got, time.perf_counter()

    try:
        async with RtuBus(os.ttyname(near), 300, timeout=2.0) as bus:
            request = asyncio.ensure_future(bus.read_holding(1, 0, 1))
            assert (await heard(8))[0][:2] == b"\x01\x03"
            serial = bus._client.ctx.transport.sync_serial
            read = serial.read

            def slow_read(size: int = 1) -> bytes:
                time.sleep(0.1)   # the loop is late to read what is already there
                return bytes(read(size))

            serial.read = slow_read
            body = bytes([1, 3, 2, 0, 42])
            crc = 0xFFFF
            for byte in body:
                crc ^= byte
                for _ in range(8):
                    crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
            os.write(far, body + crc.to_bytes(2, "little"))
            replied = time.perf_counter()
            assert await request == [42]
            serial.read = read
            following = asyncio.ensure_future(bus.read_holding(1, 0, 1))
            _, sent = await heard(8)
            following.cancel()
            assert t35(300) <= sent - replied < t35(300) + 0.06, sent - replied
    finally:
        os.close(far)
        os.close(near)
