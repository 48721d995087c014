"""Modbus wire efficiency: gateway transactions/s through the paced bus vs the wire's limit.

The simulator runs as its own process (`edgefleet sim bus`, as a technician would start it), with
one real firmware node; the gateway's RTU coordinator polls it with 10-register FC03 reads.
Theoretical limit per transaction: (8 + 25) characters of 11 bits plus two t3.5 gaps.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time

from bench.results import Metric
from gateway.rtu import RtuBus
from hardware.serialline import transaction_wire_time

REQUEST_LEN, RESPONSE_LEN, REGISTERS = 8, 25, 10


async def _measure(port: str, baud: int, seconds: float) -> tuple[float, float]:
    """Transactions/s over the run, and the median time of one transaction (which a loaded
    machine's scheduling stalls move far less than the mean)."""
    async with RtuBus(port, baud, timeout=0.5) as rtu:
        for _ in range(20):  # warm-up: node booted, caches hot
            await rtu.read_holding(1, 0, REGISTERS)
        times: list[float] = []
        start = last = time.perf_counter()
        while last - start < seconds:
            await rtu.read_holding(1, 0, REGISTERS)
            now = time.perf_counter()
            times.append(now - last)
            last = now
        return len(times) / (last - start), statistics.median(times)


def wire_efficiency(baud: int, seconds: float = 8.0) -> tuple[float, float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli", "sim", "bus", "--node", "1:fire",
         "--baud", str(baud)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        if not port:
            raise RuntimeError("edgefleet sim bus printed no pty path")
        time.sleep(1.0)  # node boot
        rate, median = asyncio.run(_measure(port, baud, seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    limit = 1 / transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)
    return rate, rate / limit, median


def run() -> list[Metric]:
    metrics = []
    for baud in (19200, 115200):
        rate, ratio, median = wire_efficiency(baud)
        ideal = transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)
        print(f"  {baud} baud: {rate:.1f} transactions/s, {ratio:.3f} of the wire limit; "
              f"median transaction {median * 1000:.2f} ms (wire {ideal * 1000:.2f} ms)",
              flush=True)
        metrics.append(Metric(
            f"modbus_wire_efficiency_{baud}", round(ratio, 4), "ratio", 0.9, "higher",
            f"{rate:.1f} tx/s vs {1 / ideal:.1f} tx/s theoretical "
            f"(FC03 x{REGISTERS}, 11-bit chars, two t3.5 gaps); median transaction "
            f"{median * 1000:.2f} ms vs {ideal * 1000:.2f} ms on the wire"))
    return metrics
