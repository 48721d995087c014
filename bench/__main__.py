"""`python -m bench` (nox -s bench): run every benchmark, write bench/results.json, print a table.

Usage: python -m bench [NAME ...]
(names: modbus, heap, outbox, mqtt, latency, ota, ingest, api, push, screen; default all)
"""

from __future__ import annotations

import logging
import sys

from bench import (
    bench_api,
    bench_heap,
    bench_ingest,
    bench_latency,
    bench_modbus,
    bench_mqtt,
    bench_ota,
    bench_outbox,
    bench_push,
    bench_screen,
)
from bench.results import RESULTS_FILE, table, write

SUITES = {"modbus": bench_modbus.run, "heap": bench_heap.run, "outbox": bench_outbox.run,
          "mqtt": bench_mqtt.run, "latency": bench_latency.run, "ota": bench_ota.run,
          "ingest": bench_ingest.run, "api": bench_api.run, "push": bench_push.run,
          "screen": bench_screen.run}


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    metrics = []
    for name in names:
        print(f"== {name}", flush=True)
        metrics += SUITES[name]()
    write(metrics)
    print()
    print(table(metrics))
    print(f"\nwrote {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
