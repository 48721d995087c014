"""Firmware heap: peak heap of a node on the MicroPython unix port while it works.

All four classes run on one bus from .mpy bytecode (as a release ships them) with the heap
capped at 64 KB (-X heapsize=64K), a scenario driving them through alarms while a master polls
every register block, and the flash-write paths exercised too: every round writes the
thresholds back over Modbus (FC16 of the class's threshold block and an FC06 of the sample
period, each saved to flash as an atomic record), and one node per round is rebooted by command (the
boot path: imports, the slot record, the config read, the boot-count write). A node that cannot
live in 64 KB dies with MemoryError: the picker resets it and the run fails on that reset.

The reported peak is the largest gc.mem_alloc() a node saw at its measuring points: the end of
its boot, every sample, and every answered request (so after each flash write): live objects
plus garbage not yet collected (the node collects every 4 KB allocated). The high-water is
per process, so it is read before each reboot and the worst of all readings is kept.
micropython.mem_info()'s own "peak=" is not used: with the GC it counts allocations that were
collected long ago (it reads 90 KB+ under a 64 KB cap).

The unix port is 64-bit: every object pointer is 8 bytes where an ESP32 uses 4, so the same
firmware needs noticeably less heap on the device than this measures.
"""

from __future__ import annotations

import asyncio
import time

from bench.results import Metric
from gateway.rtu import ModbusError, NoResponse, RtuBus
from hardware.regmap import load_maps
from hardware.sim.simbus import NodeProcess, SimBus
from hardware.sim.simrun import attach_physics

NODES = [(1, "fire"), (2, "flood"), (3, "water"), (4, "air")]
REBOOT = load_maps().commands["reboot"]


async def _poll_round(rtu: RtuBus, seconds: float) -> None:
    maps = load_maps()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for address, cls in NODES:
            cmap = maps.classes[cls]
            try:
                await rtu.read_input(address, 0, cmap.input_count)
                await rtu.read_holding(address, 0, cmap.holding_count)
            except NoResponse:
                pass  # a node rebooting


async def _write_thresholds(rtu: RtuBus) -> int:
    """Write every node's class thresholds back as they are (one FC16 of the whole block) and
    its sample period (FC06): each write is saved to flash. Returns the writes answered."""
    maps = load_maps()
    done = 0
    for address, cls in NODES:
        block = sorted(r.address for r in maps.classes[cls].holding if r.address >= 16)
        first, count = block[0], block[-1] - block[0] + 1
        try:
            thresholds = await rtu.read_holding(address, first, count)
            await rtu.write_registers(address, first, thresholds)
            period = await rtu.read_holding(address, 1, 1)
            await rtu.write_register(address, 1, period[0])
            done += 2
        except (NoResponse, ModbusError):
            pass
    return done


def _record_peaks(bus: SimBus, peaks: dict[str, int]) -> None:
    for node in bus.nodes:
        node.events.diag = {}
        node.request_diag()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not all(n.events.diag for n in bus.nodes):
        time.sleep(0.05)
    for node in bus.nodes:
        peak = node.events.diag.get("peak_alloc")
        if peak is not None:
            peaks[node.label] = max(peaks.get(node.label, 0), int(peak))


def _failures(nodes: list[NodeProcess]) -> dict[str, dict[str, int]]:
    return {n.label: {"crash_resets": n.events.crash_resets,
                      "watchdog_resets": n.events.watchdog_resets}
            for n in nodes if n.events.crash_resets or n.events.watchdog_resets
            or n.events.stalled}


def run(seconds: float = 25.0, rounds: int = 5) -> list[Metric]:
    peaks: dict[str, int] = {}
    writes = reboots = 0
    with SimBus(NODES, heap="64K", compiled=True) as bus:
        attach_physics(bus, "city_block", time_scale=4.0)
        time.sleep(1.0)

        async def drive() -> None:
            nonlocal writes, reboots
            async with RtuBus(bus.master_path, 19200, timeout=0.3) as rtu:
                for i in range(rounds):
                    await _poll_round(rtu, seconds / rounds)
                    writes += await _write_thresholds(rtu)
                    await _poll_round(rtu, 0.5)
                    _record_peaks(bus, peaks)  # before the reboot forgets this process' peak
                    address = NODES[i % len(NODES)][0]
                    try:
                        await rtu.write_register(address, 0, REBOOT)
                        reboots += 1
                    except (NoResponse, ModbusError):
                        pass
                await asyncio.sleep(2.0)
                await _poll_round(rtu, 2.0)

        asyncio.run(drive())
        _record_peaks(bus, peaks)
        failed = _failures(bus.nodes)
        restarts = sum(n.events.restarts for n in bus.nodes)
    if failed:
        raise RuntimeError(f"nodes reset under the 64 KB heap cap: {failed}")
    if len(peaks) != len(NODES):
        raise RuntimeError(f"a node did not report its heap: {peaks}")
    if writes < rounds * len(NODES) or reboots < rounds or restarts < reboots:
        raise RuntimeError(f"the write path was not exercised: {writes} threshold writes, "
                           f"{reboots} reboot commands, {restarts} restarts")
    peak = max(peaks.values())
    print(f"  heap high-water per node: {peaks}", flush=True)
    print(f"  {writes} threshold writes saved to flash, {reboots} reboots", flush=True)
    return [Metric("firmware_heap_bytes", peak, "bytes", 65536, "lower",
                   f"gc.mem_alloc() high-water (boot, samples, every answered request), worst "
                   f"of fire/flood/water/air running .mpy under a hard 64 KB heap cap for "
                   f"{seconds:.0f} s of a scenario with {writes} threshold writes saved to "
                   f"flash and {reboots} reboots (unix port, 64-bit objects)")]
