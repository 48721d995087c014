"""Outbox throughput: storing and draining messages in the gateway's SQLite WAL queue.

The gateway's publish goal is 10,000 msgs/s end to end; the outbox must not be the limit, so the
goal here is 20,000 msgs/s each way, measured as configured in production (synchronous=FULL for
stores, one fsync per batch of 500; NORMAL for acks). Bodies are realistic ~200-byte telemetry.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.results import Metric
from gateway.outbox import Message, Outbox

BATCH, BACKLOG, PEEK = 500, 200_000, 1000
GOAL = 20_000.0


def telemetry(n: int, gateway: str = "gw-bench") -> Message:
    """A realistic ~220-byte telemetry message of one of 40 detectors (shared by the benches)."""
    device = f"fire-{n % 40:03d}"
    body: dict[str, Any] = {
        "v": 1, "device": device, "class": "fire", "ts": "2026-11-23T05:00:00.123Z",
        "values": {"temperature": 21.5 + n % 7, "smoke": 0.012, "co": 3.0, "battery": 3.61},
        "units": {"temperature": "°C", "smoke": "dB/m", "co": "ppm", "battery": "V"},
    }
    return Message(f"edgefleet/v1/{gateway}/{device}/telemetry", body, "telemetry", device=device)


def put_rate(path: Path, total: int) -> tuple[float, int]:
    """Messages/s through put_many(BATCH); also returns the mean payload size."""
    batches = [[telemetry(i + b) for i in range(BATCH)] for b in range(0, total, BATCH)]
    with Outbox(path, max_bytes=1 << 40) as outbox:
        start = time.perf_counter()
        for batch in batches:
            outbox.put_many(batch)
        elapsed = time.perf_counter() - start
        stats = outbox.stats()
    return total / elapsed, stats.bytes // max(stats.depth, 1)


def drain_rate(path: Path) -> float:
    """Messages/s through peek(PEEK) + ack over the backlog left in path."""
    with Outbox(path, max_bytes=1 << 40) as outbox:
        depth = outbox.stats().depth
        start = time.perf_counter()
        while batch := outbox.peek(PEEK):
            outbox.ack(m.id for m in batch)
        elapsed = time.perf_counter() - start
    return depth / elapsed


def run() -> list[Metric]:
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        path = Path(tmp) / "outbox.db"
        put, size = put_rate(path, BACKLOG)
        drain = drain_rate(path)
    print(f"  put_many({BATCH}): {put:,.0f} msgs/s ({size}-byte payloads); "
          f"peek({PEEK})+ack over {BACKLOG:,}: {drain:,.0f} msgs/s", flush=True)
    return [
        Metric("outbox_put_msgs_per_s", round(put), "msgs/s", GOAL, "higher",
               f"put_many batches of {BATCH} telemetry (~{size} B JSON), synchronous=FULL, "
               "one fsync per batch"),
        Metric("outbox_drain_msgs_per_s", round(drain), "msgs/s", GOAL, "higher",
               f"peek({PEEK}) + ack loop over a {BACKLOG:,}-message backlog"),
    ]


if __name__ == "__main__":
    from bench.results import table

    print(table(run()))
