"""Modbus wire efficiency: gateway transactions/s through the paced bus vs the wire's limit.

The simulator (the bus hub and one real firmware node, MicroPython unix port) runs as its own
process; the gateway's RTU coordinator polls it with 10-register FC03 reads. Theoretical limit
per transaction: (8 + 25) characters of 11 bits plus two t3.5 gaps.

The simulator stands in for parts that never share a CPU with the gateway on a riser: the wire
and the node's own microcontroller. On a shared host its wake-ups (the hub's reads, the node's
end of silence) land in every transaction and were counted against the gateway, so on a loaded
machine the ratio followed the host's load more than the master. Where the bench may (root, or
CAP_SYS_NICE), the simulator runs at nice -10 so the load lands on the part under test; the
master keeps the normal priority the systemd unit gives the gateway. The printout says which.

The hub traces every transmission during the measured run (``BusHub.trace``), so the bench also
shows where each transaction's time goes: the wire (request and answer), the node's turnaround
(request delivered -> first byte of the answer) and the master's (answer delivered -> next
request): t3.5 is the least either may keep; the rest is wake-ups, pty hops and the code.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from bench.results import Metric
from gateway.rtu import NoResponse, RtuBus
from hardware.serialline import t35, transaction_wire_time

REQUEST_LEN, RESPONSE_LEN, REGISTERS = 8, 25, 10
SIM_NICE = -10
MASTER_SLACK_MS = 0.25  # the master's turnaround goal: t3.5 plus this


@dataclass
class Run:
    rate: float          # transactions/s over the measured run
    median_s: float      # median time of one transaction (scheduling stalls move it less)
    node_s: float        # median node turnaround, from the hub's trace
    master_s: float      # median master turnaround, from the hub's trace
    raised: bool         # the simulator ran at SIM_NICE

    def ratio(self, baud: int) -> float:
        return self.rate * transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)


def _simulator(conn: Connection, baud: int) -> None:
    """The simulator's process: one fire node on a paced hub; its trace on request."""
    try:
        os.nice(SIM_NICE)  # before the hub thread and the node process: both inherit it
        raised = True
    except PermissionError:
        raised = False
    from hardware.sim.simbus import SimBus

    with SimBus([(1, "fire")], baud=baud, paced=True, compiled=True) as sim:
        conn.send((sim.master_path, raised))
        conn.recv()  # the master has warmed up: trace from here
        sim.hub.trace = []
        conn.recv()  # the run is over
        conn.send(sim.hub.trace)


def turnarounds(trace: list[tuple[int, float, float, int]]) -> tuple[list[float], list[float]]:
    """Node and master turnarounds of every request -> answer -> next request in a hub trace
    (sender port, first bytes read, handed to the receivers, length; port 0 is the master)."""
    node, master = [], []
    for request, answer, following in zip(trace, trace[1:], trace[2:], strict=False):
        if request[0] == 0 and answer[0] != 0 and following[0] == 0:
            node.append(answer[1] - request[2])
            master.append(following[1] - answer[2])
    return node, master


async def _poll(port: str, baud: int, seconds: float, conn: Connection) -> tuple[float, float]:
    async with RtuBus(port, baud, timeout=0.5) as rtu:
        for _ in range(50):  # the node boots
            try:
                await rtu.read_holding(1, 0, REGISTERS)
                break
            except NoResponse:
                await asyncio.sleep(0.1)
        for _ in range(20):  # warm-up: caches hot
            await rtu.read_holding(1, 0, REGISTERS)
        conn.send("trace")
        times: list[float] = []
        start = last = time.perf_counter()
        while last - start < seconds:
            await rtu.read_holding(1, 0, REGISTERS)
            now = time.perf_counter()
            times.append(now - last)
            last = now
        return len(times) / (last - start), statistics.median(times)


def wire_efficiency(baud: int, seconds: float = 8.0) -> Run:
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    proc = context.Process(target=_simulator, args=(child_conn, baud), name="bench-sim-bus")
    proc.start()
    try:
        if not conn.poll(30):
            raise RuntimeError("the simulator did not start its bus within 30 s")
        port, raised = conn.recv()
        rate, median = asyncio.run(_poll(port, baud, seconds, conn))
        conn.send("done")
        node, master = turnarounds(conn.recv())
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
    return Run(rate, median, statistics.median(node), statistics.median(master), raised)


def run() -> list[Metric]:
    metrics = []
    for baud in (19200, 115200):
        got = wire_efficiency(baud)
        ideal = transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)
        gap_ms = t35(baud) * 1000
        priority = f"simulator at nice {SIM_NICE}" if got.raised else \
            "simulator at normal priority (no permission to raise it)"
        turns = (f"median turnarounds: node {got.node_s * 1000:.2f} ms, master "
                 f"{got.master_s * 1000:.2f} ms (t3.5 {gap_ms:.2f} ms)")
        print(f"  {baud} baud: {got.rate:.1f} transactions/s, {got.ratio(baud):.3f} of the wire "
              f"limit; median transaction {got.median_s * 1000:.2f} ms (wire {ideal * 1000:.2f} "
              f"ms); {turns}; {priority}", flush=True)
        metrics.append(Metric(
            f"modbus_wire_efficiency_{baud}", round(got.ratio(baud), 4), "ratio", 0.9, "higher",
            f"{got.rate:.1f} tx/s vs {1 / ideal:.1f} tx/s theoretical "
            f"(FC03 x{REGISTERS}, 11-bit chars, two t3.5 gaps); median transaction "
            f"{got.median_s * 1000:.2f} ms vs {ideal * 1000:.2f} ms on the wire; {turns}; "
            f"{priority}"))
        if baud == 115200:
            metrics.append(Metric(
                "modbus_master_turnaround_115200_ms", round(got.master_s * 1000, 3), "ms",
                round(gap_ms + MASTER_SLACK_MS, 3), "lower",
                f"median time from the node's answer handed to the master's port to the next "
                f"request read by the bus hub (hub trace, {baud} baud); t3.5 {gap_ms:.2f} ms is "
                f"the least allowed, the goal allows {MASTER_SLACK_MS} ms of wake-ups and pty "
                f"hops over it"))
    return metrics
