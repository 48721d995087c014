"""Bus fixtures: real firmware nodes (MicroPython unix port) on the simulator's RS-485 hub,
read by real Modbus masters (pymodbus here, libmodbus' mbpoll where a test says so)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from hardware.regmap import ClassMap, load_maps
from hardware.serialline import allow_parity_on_ptys
from hardware.sim.scenario import Scenario
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics, find_scenario

MAPS = load_maps()
STATUS = {b.name: b.bit for b in MAPS.status_bits}


class ModbusFailure(AssertionError):
    pass


class Master:
    """A plain synchronous pymodbus master on the bus' master pty."""

    def __init__(self, port: str, baud: int = 19200, timeout: float = 0.5, retries: int = 2):
        allow_parity_on_ptys()
        self.client = ModbusSerialClient(port, framer=FramerType.RTU, baudrate=baud,
                                         parity="E", timeout=timeout, retries=retries)
        assert self.client.connect(), f"cannot open {port}"

    def close(self) -> None:
        self.client.close()

    def _check(self, rr: Any, what: str) -> Any:
        if rr.isError():
            raise ModbusFailure(f"{what}: {rr}")
        return rr

    def inputs(self, device: int, address: int = 0, count: int | None = None) -> list[int]:
        if count is None:
            count = self.class_map(device).input_count - address
        rr = self.client.read_input_registers(address, count=count, device_id=device)
        return list(self._check(rr, f"read inputs of {device}").registers)

    def holdings(self, device: int, address: int, count: int = 1) -> list[int]:
        rr = self.client.read_holding_registers(address, count=count, device_id=device)
        return list(self._check(rr, f"read holdings of {device}").registers)

    def write(self, device: int, address: int, value: int) -> None:
        self._check(self.client.write_register(address, value, device_id=device),
                    f"write {address}={value} to {device}")

    def class_map(self, device: int) -> ClassMap:
        rr = self.client.read_input_registers(1, count=1, device_id=device)
        return MAPS.by_id(self._check(rr, f"read class of {device}").registers[0])

    def values(self, device: int) -> dict[str, float]:
        cmap = self.class_map(device)
        return cmap.decode_inputs(self.inputs(device, 0, cmap.input_count))

    def try_values(self, device: int) -> dict[str, float] | None:
        try:
            return self.values(device)
        except (ModbusFailure, ModbusException):
            return None


def bits(value: float, table: Any) -> set[str]:
    word = int(value)
    return {b.name for b in table if word >> b.bit & 1}


@dataclass
class Bus:
    sim: SimBus
    feed: PhysicsFeed
    master: Master
    extra: list[Any] = field(default_factory=list)


def open_bus(nodes: list[tuple[int, str]], scenario: str | None = None,
             time_scale: float = 1.0, wait_ready: bool = True,
             prepare: Callable[[SimBus], None] | None = None, **options: Any) -> Bus:
    """A started bus with its physics and a master; close_bus() ends it (see start_bus)."""
    sim = SimBus(nodes, **options)
    feed = attach_physics(sim, scenario, time_scale)
    if prepare is not None:
        prepare(sim)
    sim.start()
    bus = Bus(sim, feed, Master(sim.master_path, sim.hub.baud))
    if wait_ready:
        try:
            for address in sorted({a for a, _ in nodes}):
                wait_answering(bus.master, address)
        except BaseException:
            close_bus(bus)
            raise
    return bus


def close_bus(bus: Bus) -> None:
    bus.master.close()
    bus.sim.stop()


@pytest.fixture
def start_bus() -> Iterator[Callable[..., Bus]]:
    """start_bus([(1, "fire")], scenario=None, time_scale=1, **SimBus options) -> Bus.

    prepare(sim), when given, runs after the nodes' flash directories are made and before they
    boot (a test that plants slot images or damaged records there)."""
    started: list[Bus] = []

    def start(nodes: list[tuple[int, str]], **kwargs: Any) -> Bus:
        bus = open_bus(nodes, **kwargs)
        started.append(bus)
        return bus

    yield start
    for bus in started:
        close_bus(bus)


# Scenarios whose node must have a history before the story starts (a flood gauge judges its
# rate of rise over a minute of readings): their bus goes on duty when the session starts, its
# physics running at the scenario's time scale with no story yet, as a street's gauge is on
# duty long before the storm, and tests/bus/test_scenarios.py takes it over. The minute then
# passes during the tests before it instead of on its own.
HISTORY_FIRST = ("flash_flood",)
ON_DUTY: dict[str, tuple[SimBus, PhysicsFeed]] = {}


@pytest.fixture(scope="session", autouse=True)
def gauges_on_duty(request: pytest.FixtureRequest) -> Iterator[None]:
    if any(item.path.name == "test_scenarios.py" for item in request.session.items):
        for name in HISTORY_FIRST:
            scenario = Scenario.load(find_scenario(name))
            sim = SimBus([(int(a), c) for a, c in scenario.nodes.items()])
            feed = attach_physics(sim, None, time_scale=scenario.time_scale)
            sim.start()
            ON_DUTY[name] = (sim, feed)
    yield
    while ON_DUTY:  # not taken over (the scenario test failed before it)
        _, (sim, _) = ON_DUTY.popitem()
        sim.stop()


def wait_answering(master: Master, address: int, timeout: float = 15.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = master.try_values(address)
        if values is not None:
            return values
        time.sleep(0.2)
    raise AssertionError(f"node {address} did not answer within {timeout:.0f}s")
