"""A sub-millisecond wake-up for the asyncio event loop: a Linux timerfd the loop watches.

asyncio wakes for its timers through the selector's timeout, and epoll takes that timeout in
whole milliseconds, rounded up: ``asyncio.sleep(0.0001)`` lasts a full millisecond. The Modbus
silent interval above 19200 baud is 1.75 ms, so a bus master that sleeps through it on the loop
either wakes up to a millisecond late (measured: 1.0-1.1 ms for a 0.05 ms sleep, which put the
OTA master's next chunk 0.2 ms past t3.5 on a median chunk) or blocks the loop, and every other
bus and the MQTT session with it, in ``time.sleep`` for most of the interval. A timerfd armed for
an absolute CLOCK_MONOTONIC time (the clock of ``time.perf_counter``) is a file descriptor like
the serial port: the loop's epoll wakes when it fires, within the thread's timer slack (1 us
after :func:`hardware.serialline.tighten_timer_slack`).

Linux only (Python 3.11 reaches timerfd through ctypes); :meth:`LoopTimer.create` returns None
elsewhere, and the caller keeps to whole-millisecond loop sleeps.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import os
import sys
import time
from collections.abc import Callable

__all__ = ["LoopTimer"]

log = logging.getLogger(__name__)

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class LoopTimer:
    """One timerfd on the running loop: :meth:`arm` a callback for a ``time.perf_counter()``
    deadline. One deadline at a time (the bus lock serialises its users); arming again
    replaces it."""

    def __init__(self, fd: int, settime: Callable[..., int]):
        self._fd = fd
        self._settime = settime
        self._spec = _Itimerspec()
        self._callback: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # watching the fd

    @classmethod
    def create(cls) -> LoopTimer | None:
        if not sys.platform.startswith("linux"):
            return None
        if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
            return None  # the deadline's clock must be the timer's
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            log.debug("timerfd_create failed: errno %d", ctypes.get_errno())
            return None
        settime = libc.timerfd_settime
        settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                            ctypes.c_void_p]
        return cls(fd, settime)

    @property
    def pending(self) -> bool:
        return self._callback is not None

    def arm(self, deadline: float, callback: Callable[[], None]) -> bool:
        """Call ``callback`` on the running loop at ``deadline`` (seconds of
        ``time.perf_counter``); False when the timer could not be set (nothing is armed)."""
        frac, whole = math.modf(deadline)
        self._spec.it_value.tv_sec = int(whole)
        self._spec.it_value.tv_nsec = max(1, int(frac * 1e9))  # all zero would disarm it
        # arming resets the expiry count: an expiry nobody read (a disarmed wait) is forgotten
        if self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) != 0:
            return False
        self._callback = callback
        loop = asyncio.get_running_loop()
        if self._loop is not loop:   # not watched yet, or by a loop that has gone
            self._unwatch()
            self._loop = loop
            loop.add_reader(self._fd, self._fired)
        return True

    def disarm(self) -> None:
        self._callback = None
        self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
        self._settime(self._fd, 0, ctypes.byref(self._spec), None)
        self._unwatch()

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        callback, self._callback = self._callback, None
        self._unwatch()
        if callback is not None:
            callback()

    def _unwatch(self) -> None:
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            self._loop = None

    def close(self) -> None:
        if self._fd >= 0:
            self._callback = None
            self._unwatch()
            os.close(self._fd)
            self._fd = -1
