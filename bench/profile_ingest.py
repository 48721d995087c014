"""``edgefleet fleet ingest`` with each of its own threads under cProfile, for
``python -m bench ingest`` with EDGEFLEET_BENCH_INGEST_PROFILE=DIR.

Usage: python -m bench.profile_ingest DIR -v fleet ingest CONFIG

cProfile follows only the thread that enables it, so every thread whose name starts with
``ingest`` (the MQTT reader, the batch writer, the command publisher) gets its own profiler,
dumped as ``DIR/<pid>-<thread>.prof`` when the thread ends (SIGTERM stops ingest cleanly).
Read them with ``python -m pstats``. The profiler roughly doubles the cost of each Python call,
so a profiled run is slower than the bench's own figure: use it for proportions only.
"""

from __future__ import annotations

import cProfile
import os
import sys
import threading
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    plain_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        if not self.name.startswith("ingest"):
            plain_run(self)
            return
        profile = cProfile.Profile()
        profile.enable()
        try:
            plain_run(self)
        finally:
            profile.disable()
            profile.dump_stats(out / f"{os.getpid()}-{self.name}.prof")

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    from edgefleet.cli import main as cli

    return cli(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
