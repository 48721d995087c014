"""Modbus wire efficiency: gateway transactions/s through the paced bus vs the wire's limit.

The simulator runs as its own process (`edgefleet sim bus`, as a technician would start it), with
one real firmware node; the gateway's RTU coordinator polls it with 10-register FC03 reads.
Theoretical limit per transaction: (8 + 25) characters of 11 bits plus two t3.5 gaps.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from bench.results import Metric
from gateway.rtu import RtuBus
from hardware.serialline import transaction_wire_time

REQUEST_LEN, RESPONSE_LEN, REGISTERS = 8, 25, 10


async def _measure(port: str, baud: int, seconds: float) -> float:
    async with RtuBus(port, baud, timeout=0.5) as rtu:
        for _ in range(20):  # warm-up: node booted, caches hot
            await rtu.read_holding(1, 0, REGISTERS)
        count = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await rtu.read_holding(1, 0, REGISTERS)
            count += 1
        return count / (time.perf_counter() - start)


def wire_efficiency(baud: int, seconds: float = 8.0) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli", "sim", "bus", "--node", "1:fire",
         "--baud", str(baud)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port:
            raise RuntimeError("edgefleet sim bus printed no pty path")
        time.sleep(1.0)  # node boot
        rate = asyncio.run(_measure(port, baud, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    limit = 1 / transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)
    return rate, rate / limit


def run() -> list[Metric]:
    metrics = []
    for baud in (19200, 115200):
        rate, ratio = wire_efficiency(baud)
        print(f"  {baud} baud: {rate:.1f} transactions/s, {ratio:.3f} of the wire limit",
              flush=True)
        metrics.append(Metric(
            f"modbus_wire_efficiency_{baud}", round(ratio, 4), "ratio", 0.9, "higher",
            f"{rate:.1f} tx/s vs {1 / transaction_wire_time(8, 25, baud):.1f} tx/s theoretical "
            f"(FC03 x{REGISTERS}, 11-bit chars, two t3.5 gaps)"))
    return metrics
