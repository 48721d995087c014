"""The Modbus serial line, said once: character time, the t3.5 silent interval, and the two
host-side knobs every part that times a bus needs (timer slack, parity on pseudo-terminals).

The gateway's bus coordinator, the simulator's bus hub and the benchmarks all import this module;
the firmware keeps its own copy of the formula in MicroPython (``firmware/app/node.py``), checked
against this one by a test.

Timer slack: Linux adds a "timer slack" of 50 us to every sleep and poll timeout of a normal
thread so that it can batch wake-ups. A Modbus frame at 115200 baud is ~3 ms and its silent
interval 1.75 ms, so four sleeps per transaction at 50-70 us of overshoot each cost several
percent of the bus. Threads that time a bus ask for 1 us slack. The setting is per thread,
inherited by threads and processes started afterwards (so simulated nodes get it).

Parity on ptys: Linux (6.x) rejects ``tcsetattr`` on a pty with EINVAL when the only requested
change is one the pty cannot hold, such as PARENB: the first configuration of a port succeeds
(other flags change with it), but any later reconfiguration (pymodbus sets ``timeout = 0`` right
after opening) fails on a 8E1 port. Real UARTs store the parity bit and never take this path. The
simulator's bus carries bytes, not bits, so parity has no meaning there anyway.
:func:`allow_parity_on_ptys` patches ``serial.Serial._reconfigure_port`` once: on EINVAL for a
pty it retries the same configuration without parity. Call it before opening serial ports.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
import termios
from typing import Any

__all__ = [
    "BITS_PER_CHAR",
    "allow_parity_on_ptys",
    "char_time",
    "t35",
    "tighten_timer_slack",
    "transaction_wire_time",
]

log = logging.getLogger(__name__)

BITS_PER_CHAR = 11  # start + 8 data + parity + stop (8E1), or 8N2
FIXED_T35_ABOVE = 19200  # Modbus over serial line v1.02, 2.5.1.1: fixed 1.75 ms above this
FIXED_T35_S = 0.00175


def char_time(baud: int) -> float:
    """Seconds one 11-bit character takes on the wire."""
    return BITS_PER_CHAR / baud


def t35(baud: int) -> float:
    """Modbus inter-frame silence: 3.5 characters, fixed 1.75 ms above 19200 baud."""
    return FIXED_T35_S if baud > FIXED_T35_ABOVE else 3.5 * char_time(baud)


def transaction_wire_time(request_len: int, response_len: int, baud: int) -> float:
    """Theoretical best time for one request/response on the wire, with both t3.5 gaps."""
    return (request_len + response_len) * char_time(baud) + 2 * t35(baud)


# -- timer slack ------------------------------------------------------------------------------
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


# -- parity on pseudo-terminals -------------------------------------------------------------
_PATCHED = False


def _is_pty(fd: int) -> bool:
    try:
        return os.ttyname(fd).startswith("/dev/pts/")
    except OSError:
        return False


def allow_parity_on_ptys() -> None:
    global _PATCHED
    if _PATCHED:
        return
    import serial
    import serial.serialposix

    original = serial.serialposix.Serial._reconfigure_port

    def _reconfigure_port(self: Any, force_update: bool = False) -> None:
        try:
            original(self, force_update)
        except termios.error as exc:
            if exc.args[0] != errno.EINVAL or self.fd is None or not _is_pty(self.fd):
                raise
            parity = self._parity
            self._parity = serial.PARITY_NONE
            try:
                original(self, force_update)
            finally:
                self._parity = parity

    serial.serialposix.Serial._reconfigure_port = _reconfigure_port
    _PATCHED = True
