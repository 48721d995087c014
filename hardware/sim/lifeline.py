"""Children that die with the process that started them, however it dies.

A process that is SIGKILLed (or crashes, or loses its terminal) runs no cleanup, so the
processes it started (Mosquitto, the fleet, the gateways, the MicroPython nodes of a simulated
bus) would live on as orphans, holding ports and ptys. :func:`start` makes a lifeline for the
calling process: a small reaper process that leads a process group of its own and holds the
read end of a pipe whose write end only the caller has. Every child started with
:func:`spawn_options` joins that group. When the caller ends, by any means, the kernel closes
the pipe; the reaper reads end-of-file, sends SIGTERM to the group, waits ``grace_s`` for it
to empty, and then SIGKILLs whatever is left (itself last).

Why not ``prctl(PR_SET_PDEATHSIG)``: the kernel sends that signal when the *thread* that forked
the child ends, not the process, and a node that reboots is restarted from its short-lived
stdout reader thread (:meth:`hardware.sim.simbus.NodeProcess._read_stdout`), so it would be
killed at once. A process group also needs no ``preexec_fn`` (``Popen(process_group=...)`` is
done by the child itself, safe in a threaded parent) and catches the children's own children.

The children are in another process group than the caller, so a terminal's Ctrl-C reaches the
caller only; it stops its children itself, in order (``edgefleet demo`` does).
POSIX (the reaper watches the group through Linux's /proc, elsewhere it waits the whole grace);
without a lifeline (:func:`start` never called) spawning is
unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

__all__ = ["active", "spawn_options", "start", "stop"]

# The reaper, run as ``python -c REAPER <fd> <grace_s>``. Standard library only, no imports from
# the project: it must start fast and must not fail for any reason of ours.
REAPER = r"""
import os, signal, sys, time
fd, grace = int(sys.argv[1]), float(sys.argv[2])
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
while True:  # returns b"" once the caller is gone: it held the only write end
    try:
        if not os.read(fd, 64):
            break
    except InterruptedError:
        continue
me = os.getpid()

def members():
    left = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] != b"Z" and int(fields[2]) == me:  # state, ppid, pgrp
            left.append(int(entry))
    return left

try:
    os.killpg(me, signal.SIGTERM)
except OSError:
    pass
if os.path.isdir("/proc/self"):
    deadline = time.monotonic() + grace
    while members() and time.monotonic() < deadline:
        time.sleep(0.05)
    if members():
        os.killpg(me, signal.SIGKILL)  # whatever is left, and the reaper itself
else:  # no /proc to watch: give them the whole grace, then no mercy
    time.sleep(grace)
    os.killpg(me, signal.SIGKILL)
"""

_reaper: subprocess.Popen[bytes] | None = None
_write_end: int | None = None


def start(grace_s: float = 3.0) -> int:
    """Start this process' lifeline (once; later calls return the same group id)."""
    global _reaper, _write_end
    if active():
        assert _reaper is not None
        return _reaper.pid
    read_end, write_end = os.pipe()  # not inheritable (PEP 446): no child holds the write end
    try:
        _reaper = subprocess.Popen([sys.executable, "-c", REAPER, str(read_end), str(grace_s)],
                                   pass_fds=(read_end,), process_group=0,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        os.close(read_end)
    _write_end = write_end
    return _reaper.pid


def active() -> bool:
    return _reaper is not None and _reaper.poll() is None


def spawn_options() -> dict[str, Any]:
    """Keyword arguments for :class:`subprocess.Popen` that put the child on the lifeline (none
    when this process has no live lifeline)."""
    return {"process_group": _reaper.pid} if active() and _reaper is not None else {}


def stop() -> None:
    """End the lifeline now (after the caller stopped its children itself): the reaper sweeps
    the group and exits."""
    global _reaper, _write_end
    if _write_end is not None:
        os.close(_write_end)
        _write_end = None
    if _reaper is not None:
        try:
            _reaper.wait(10)
        except subprocess.TimeoutExpired:
            _reaper.kill()
            _reaper.wait()
        _reaper = None
