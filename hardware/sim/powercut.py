"""The simulator's power-fail hook (the MCUboot simulator's way): count a node's flash writes and
cut its power at the Nth one, so that a test can cut at every write step of an update in turn.

Only the simulator installs it, never a board: a node whose writes are counted
(:meth:`~hardware.sim.simbus.NodeProcess.count_writes`) runs ``micropython -c HOOK`` instead of
``micropython main.py``. The hook wraps ``open`` (in a writing mode) and ``os.rename``,
``os.remove``, ``os.mkdir`` and ``os.rmdir`` for every module the firmware imports, then imports
main.py: the firmware's own code path is the board's. Each write step prints
``powercut: N op path`` (the simulator keeps the log across boots); when N reaches the number
in the control file (``EF_POWERCUT``, counted from ``EF_POWERCUT_BASE``: the steps earlier boots
made) the process is SIGKILLed, as a power cut ends it, with no cleanup. A cut at an ``open``
leaves the file created and empty (its data never reached the flash); a cut at a rename, remove,
mkdir or rmdir comes before it.
"""

from __future__ import annotations

STEP = "powercut: "   # the prefix of every line the hook prints
CUT = "powercut: cut"

HOOK = """
import builtins, os, sys
_o = builtins.open
_c = [int(os.getenv("EF_POWERCUT_BASE"))]
_f = os.getenv("EF_POWERCUT")
def _step(op, p):
    _c[0] += 1
    print("powercut: %d %s %s" % (_c[0], op, p))
    try:
        with _o(_f) as fh:
            at = int(fh.read())
    except (OSError, ValueError):
        return
    if at == _c[0]:
        print("powercut: cut")
        os.system("kill -KILL $PPID")
def _open(p, m="r", *a):
    if ("w" in m or "a" in m or "+" in m) and not p.startswith("/dev/"):
        fh = _o(p, m, *a)
        _step("open", p)
        return fh
    return _o(p, m, *a)
class _Os:
    def __getattr__(s, n):
        return getattr(os, n)
    def rename(s, a, b):
        _step("rename", b)
        os.rename(a, b)
    def remove(s, p):
        _step("remove", p)
        os.remove(p)
    def mkdir(s, p):
        _step("mkdir", p)
        os.mkdir(p)
    def rmdir(s, p):
        _step("rmdir", p)
        os.rmdir(p)
builtins.open = _open
sys.modules["os"] = _Os()
import main
"""
