"""Firmware heap: peak heap of a node on the MicroPython unix port while it works.

All four classes run on one bus from .mpy bytecode (as a release ships them) with the heap
capped at 64 KB (-X heapsize=64K), a scenario
driving them through alarms while a master polls every register block. A node that cannot
live in 64 KB dies with MemoryError, which fails the run. The reported peak is the largest
gc.mem_alloc() a node saw at its sample points (live objects plus garbage not yet collected;
the node collects every 4 KB allocated). micropython.mem_info()'s own "peak=" is not used: with
the GC it counts allocations that were collected long ago (it reads 90 KB+ under a 64 KB cap).

The unix port is 64-bit: every object pointer is 8 bytes where an ESP32 uses 4, so the same
firmware needs noticeably less heap on the device than this measures.
"""

from __future__ import annotations

import asyncio
import time

from bench.results import Metric
from gateway.rtu import NoResponse, RtuBus
from hardware.regmap import load_maps
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import attach_physics

NODES = [(1, "fire"), (2, "flood"), (3, "water"), (4, "air")]


async def _poll(port: str, seconds: float) -> None:
    maps = load_maps()
    async with RtuBus(port, 19200, timeout=0.3) as rtu:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for address, cls in NODES:
                cmap = maps.classes[cls]
                try:
                    await rtu.read_input(address, 0, cmap.input_count)
                    await rtu.read_holding(address, 0, cmap.holding_count)
                except NoResponse:
                    pass


def run(seconds: float = 25.0) -> list[Metric]:
    with SimBus(NODES, heap="64K", compiled=True) as bus:
        attach_physics(bus, "city_block", time_scale=4.0)
        time.sleep(1.0)
        asyncio.run(_poll(bus.master_path, seconds))
        for node in bus.nodes:
            node.request_diag()
        time.sleep(1.0)
        peaks = {n.label: n.events.diag.get("peak_alloc") for n in bus.nodes}
        live = {n.label: n.events.diag.get("alloc") for n in bus.nodes}
        restarts = {n.label: n.events.restarts for n in bus.nodes}
    if any(restarts.values()):
        raise RuntimeError(f"nodes restarted under the 64 KB heap cap: {restarts}")
    if any(v is None for v in peaks.values()):
        raise RuntimeError(f"a node did not report its heap: {peaks}")
    peak = max(v for v in peaks.values() if v is not None)
    print(f"  heap high-water per node: {peaks}", flush=True)
    print(f"  live heap after a collection: {live}", flush=True)
    return [Metric("firmware_heap_bytes", peak, "bytes", 65536, "lower",
                   f"gc.mem_alloc() high-water, worst of fire/flood/water/air running .mpy "
                   f"under a hard 64 KB heap cap for {seconds:.0f} s of a scenario "
                   f"(unix port, 64-bit objects)")]
