"""Modbus wire efficiency: gateway transactions/s through the paced bus vs the wire's limit.

The simulator runs as its own process, as `edgefleet sim bus --node 1:fire` does: the bus hub,
one real firmware node (MicroPython unix port, the app compiled to .mpy as a release ships it)
and its sensor fed by the physics model. The gateway's RTU coordinator polls it with 10-register
FC03 reads. Theoretical limit per transaction: (8 + 25) characters of 11 bits plus two t3.5
gaps.

The simulator stands in for parts that never share a CPU with the gateway on a riser: the wire
and the node's own microcontroller. On a shared host its wake-ups (the hub's reads, the node's
end of silence) would land in the transaction time as if the gateway had lost it. Where the
bench may (root, CAP_SYS_NICE, or an RLIMIT_NICE that allows it), the simulator runs SIM_NICE
steps above the bench's own niceness, so a loaded host's wake-ups fall on the part under test;
the master keeps the bench's priority. The printout gives the niceness both ran at.

The hub traces every transmission during the measured run (``BusHub.trace``), so the bench also
shows where each transaction's time goes: the wire (request and answer), the node's turnaround
(request delivered -> first byte of the answer) and the master's (answer delivered -> next
request): t3.5 is the least either may keep; the rest is wake-ups, pty hops and the code.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from bench.results import Metric
from gateway.rtu import NoResponse, RtuBus
from hardware.serialline import t35, transaction_wire_time

REQUEST_LEN, RESPONSE_LEN, REGISTERS = 8, 25, 10
SIM_NICE = -10  # the simulator's niceness, relative to the bench's
BOOT_TRIES = 50  # reads, 0.1 s apart, for the node to boot
MASTER_SLACK_MS = 0.25  # the master's turnaround goal: t3.5 plus this


@dataclass
class Run:
    rate: float          # transactions/s over the measured run
    median_s: float      # median time of one transaction (scheduling stalls move it less)
    node_s: float        # median node turnaround, from the hub's trace
    master_s: float      # median master turnaround, from the hub's trace
    sim_nice: int        # the simulator's niceness
    master_nice: int     # the master's (this process')

    def ratio(self, baud: int) -> float:
        """Transactions/s as a share of the wire's limit at ``baud``."""
        return self.rate * transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)

    def priorities(self) -> str:
        if self.sim_nice == self.master_nice:
            return f"simulator and master at nice {self.master_nice} (no permission to raise it)"
        return f"simulator at nice {self.sim_nice}, master at nice {self.master_nice}"


def _simulator(conn: Connection, baud: int) -> None:
    """The simulator's process: one fire node on a paced hub; its trace on request. It ends
    when the bench closes its end of the pipe, or on SIGTERM, and stops the bus either way."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:  # before the hub thread and the node process exist: both inherit it
        nice = os.nice(SIM_NICE)
    except PermissionError:
        nice = os.nice(0)
    from hardware.sim import lifeline
    from hardware.sim.simbus import SimBus
    from hardware.sim.simrun import attach_physics

    lifeline.start()  # the node dies with this process, even a SIGKILLed one
    sim = SimBus([(1, "fire")], baud=baud, paced=True, compiled=True)
    attach_physics(sim)
    with sim:
        conn.send((sim.master_path, nice))
        try:
            conn.recv()  # the master has warmed up: trace from here
            sim.hub.trace = []
            conn.recv()  # the run is over
            conn.send(sim.hub.trace)
        except EOFError:
            pass  # the bench ended early: stop the bus
    lifeline.stop()


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
        for _ in range(BOOT_TRIES):  # the node boots
            try:
                await rtu.read_holding(1, 0, REGISTERS)
                break
            except NoResponse:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"the simulated node did not answer within {BOOT_TRIES} tries")
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
    """Poll the simulator's node for ``seconds`` at ``baud``; the rate and where time went."""
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    proc = context.Process(target=_simulator, args=(child_conn, baud), name="bench-sim-bus")
    proc.start()
    child_conn.close()  # the simulator's end: a simulator that dies closes the pipe
    try:
        try:
            if not conn.poll(30):
                raise RuntimeError("the simulator did not start its bus within 30 s")
            port, sim_nice = conn.recv()
            rate, median = asyncio.run(_poll(port, baud, seconds, conn))
            conn.send("done")
            node, master = turnarounds(conn.recv())
        except EOFError:
            proc.join(timeout=10)
            raise RuntimeError(f"the simulator ended early (exit code {proc.exitcode})") from None
    finally:
        conn.close()  # the simulator stops its bus and exits
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
        proc.close()
    return Run(rate, median, statistics.median(node), statistics.median(master), sim_nice,
               os.nice(0))


def run() -> list[Metric]:
    metrics = []
    for baud in (19200, 115200):
        got = wire_efficiency(baud)
        ideal = transaction_wire_time(REQUEST_LEN, RESPONSE_LEN, baud)
        gap_ms = t35(baud) * 1000
        turns = (f"median turnarounds: node {got.node_s * 1000:.2f} ms, master "
                 f"{got.master_s * 1000:.2f} ms (t3.5 {gap_ms:.2f} ms)")
        print(f"  {baud} baud: {got.rate:.1f} transactions/s, {got.ratio(baud):.3f} of the wire "
              f"limit; median transaction {got.median_s * 1000:.2f} ms (wire {ideal * 1000:.2f} "
              f"ms); {turns}; {got.priorities()}", flush=True)
        metrics.append(Metric(
            f"modbus_wire_efficiency_{baud}", round(got.ratio(baud), 4), "ratio", 0.9, "higher",
            f"{got.rate:.1f} tx/s vs {1 / ideal:.1f} tx/s theoretical "
            f"(FC03 x{REGISTERS}, 11-bit chars, two t3.5 gaps); median transaction "
            f"{got.median_s * 1000:.2f} ms vs {ideal * 1000:.2f} ms on the wire; {turns}; "
            f"{got.priorities()}"))
        if baud == 115200:
            metrics.append(Metric(
                "modbus_master_turnaround_115200_ms", round(got.master_s * 1000, 3), "ms",
                round(gap_ms + MASTER_SLACK_MS, 3), "lower",
                f"median time from the node's answer handed to the master's port to the next "
                f"request read by the bus hub (hub trace, {baud} baud); t3.5 {gap_ms:.2f} ms is "
                f"the least allowed, the goal allows {MASTER_SLACK_MS} ms of wake-ups and pty "
                f"hops over it; {got.priorities()}"))
    return metrics
