"""A fleet app served by uvicorn on a thread of the test process, for the tests that need the
real HTTP server (event streams, the browser, the gateway's bundle downloads)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


def serve(app: Any, port: int, *, start_timeout_s: float = 15) -> tuple[uvicorn.Server,
                                                                       threading.Thread]:
    """Start ``app`` on 127.0.0.1:``port`` and return once it accepts connections."""
    # Open event streams would hold a graceful shutdown forever: cut them after a second.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="fleet-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fleet app did not start")
        time.sleep(0.02)
    return server, thread
