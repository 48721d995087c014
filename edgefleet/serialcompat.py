"""pyserial on pseudo-terminals: tolerate the parity bit a pty cannot store.

Linux (6.x) rejects ``tcsetattr`` on a pty with EINVAL when the only requested change is one the
pty cannot hold, such as PARENB: the first configuration of a port succeeds (other flags change
with it), but any later reconfiguration (pymodbus sets ``timeout = 0`` right after opening)
fails on a 8E1 port. Real UARTs store the parity bit and never take this path. The simulator's bus
carries bytes, not bits, so parity has no meaning there anyway.

:func:`allow_parity_on_ptys` patches ``serial.Serial._reconfigure_port`` once: on EINVAL for a
pty it retries the same configuration without parity. Call it before opening serial ports.
"""

from __future__ import annotations

import errno
import os
import termios
from typing import Any

import serial
import serial.serialposix

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
