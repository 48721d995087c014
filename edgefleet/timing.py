"""Sub-millisecond timing for bus work.

Linux adds a "timer slack" of 50 us to every sleep and poll timeout of a normal thread so that it
can batch wake-ups. A Modbus frame at 115200 baud is ~3 ms and its silent interval 1.75 ms, so
four sleeps per transaction at 50-70 us of overshoot each cost several percent of the bus. Threads
that time a bus (the bus hub, a gateway's bus coordinator) ask for 1 us slack. The setting is
per thread, inherited by threads and processes started afterwards (so simulated nodes get it).
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_PR_SET_TIMERSLACK = 29


def tighten_timer_slack(nanoseconds: int = 1000) -> bool:
    """Set this thread's timer slack; False where the platform has no such knob."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_TIMERSLACK) unavailable")
        return False
