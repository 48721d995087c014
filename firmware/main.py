# Slot picker: start the watchdog, choose which application image to start, hand over to it,
# and reset the board when the image fails.
#
# The device keeps two application slots, /a/app and /b/app, and a flash record /slots.json
# (the CRC'd atomic format of /record.py):
#   {"active": "a", "previous": "b", "trial": false, "tries": 0, "pending": null,
#    "rolled_back": false}
# The update sequence is a small state machine, reported in the node's status word:
#   1. an installer writes the new image into the inactive slot and sets "pending" to it
#      (status bit ota: an update is staged and waits for the reboot that starts it);
#   2. at the next boot the picker makes the pending slot active as a trial (status bit trial);
#      the trial gets MAX_TRIES boots to be confirmed (holding register 0 = 4, sent by the
#      gateway once the node answers);
#   3. an unconfirmed trial, a trial that raises, or a missing/empty slot rolls back to the
#      previous slot (status bit rolled_back, until the next update is staged).
# The watchdog starts here, before any application code is imported, so an image that hangs at
# import time resets the board like one that raises. This file and /record.py never change in an
# update; only the slots do.
import gc
import os
import sys

# Collect after every 4 KB allocated from the very first import: without it garbage from
# loading modules piles up to the heap's end and fragments it before the node even starts.
if hasattr(gc, "threshold"):  # CPython imports this file in tests, and has no gc.threshold
    gc.threshold(4096)

import record  # noqa: E402 - after the gc threshold, on purpose

MAX_TRIES = 3
WDT_MS = 8000  # ESP32 task watchdog; the node loop feeds it at least every WDT_MS / 2
EXIT_REBOOT = 75  # unix port: the simulator's supervisor restarts a node that exits with this
EXIT_CRASH = 76  # unix port: the same reset, after an exception (the supervisor counts them)
SLOT_NAMES = ("a", "b")
_getenv = getattr(os, "getenv", None)
ROOT = _getenv("EF_ROOT") if _getenv else None
ROOT = (ROOT.rstrip("/") + "/") if ROOT else "/"
SLOTS = ROOT + "slots.json"


class SoftWatchdog:
    """The unix port's machine.WDT: a thread that ends the process when feed() comes late.

    The process dies of SIGALRM (sent by the shell to its parent, the interpreter: the unix port
    has neither os.getpid nor os.kill), which the simulator's supervisor treats as a watchdog
    reset. The watching thread allocates nothing while it waits (the unix port's threads share
    the heap without a lock)."""

    def __init__(self, timeout_ms):
        import _thread
        import time

        self._time = time
        self.timeout_ms = timeout_ms
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())
        print("watchdog: armed %d ms" % timeout_ms)  # the simulator's supervisor reads it

    def feed(self):
        self._fed = self._time.ticks_ms()

    def _watch(self):
        time = self._time
        while time.ticks_diff(time.ticks_ms(), self._fed) <= self.timeout_ms:
            time.sleep_ms(20)
        print("watchdog: not fed for %d ms: reset" % self.timeout_ms)
        os.system("kill -ALRM $PPID")


def start_watchdog():
    """(watchdog, timeout_ms): the hardware WDT, or the software one on the unix port.
    EF_WDT_MS overrides the timeout on the unix port; 0 turns it off (a bare REPL session)."""
    timeout = WDT_MS
    override = _getenv("EF_WDT_MS") if _getenv else None
    if override is not None:
        timeout = int(override)
    if timeout <= 0:
        return None, 0
    try:
        from machine import WDT
    except ImportError:  # the unix port's machine module has no WDT
        return SoftWatchdog(timeout), timeout
    return WDT(timeout=timeout), timeout


# -- the slot record --------------------------------------------------------------------
def clean(stored):
    """Any value at all -> a well-typed slot record (unknown or mistyped fields default)."""
    slots = {"active": "a", "previous": None, "trial": False, "tries": 0, "pending": None,
             "rolled_back": False}
    if not isinstance(stored, dict):
        return slots
    for key in ("active", "previous", "pending"):
        value = stored.get(key)
        if value in SLOT_NAMES or (value is None and key != "active"):
            slots[key] = value
    for key in ("trial", "rolled_back"):
        if isinstance(stored.get(key), bool):
            slots[key] = stored[key]
    tries = stored.get("tries")
    if isinstance(tries, int) and not isinstance(tries, bool) and 0 <= tries < 1000:
        slots["tries"] = tries
    return slots


def load():
    try:
        return clean(record.read(SLOTS))
    except record.CorruptRecord:
        pass
    try:  # the first releases wrote plain JSON without a CRC line: keep their slot choice
        import json
        with open(SLOTS) as fh:
            return clean(json.load(fh))
    except Exception:  # noqa: BLE001 - whatever the bytes, the picker must pick
        return clean(None)


def save(slots):
    try:
        record.write(SLOTS, slots)
    except OSError:
        pass  # a failing flash must not stop the boot; the picker works from memory


def slot_ok(name):
    """A slot holds an image: its node module exists and is not empty."""
    for leaf in ("node.mpy", "node.py"):
        try:
            if os.stat(ROOT + name + "/app/" + leaf)[6] > 0:
                return True
        except OSError:
            pass
    return False


def _roll_back(slots):
    return {"active": slots["previous"], "previous": slots["active"], "trial": False,
            "tries": 0, "pending": None, "rolled_back": True}


def choose(slots, ok=slot_ok):
    """The record for this boot (pure but for ok(slot), which looks at the flash)."""
    slots = dict(slots)
    pending = slots["pending"]
    if pending is not None:
        if pending != slots["active"] and ok(pending):
            slots = {"active": pending, "previous": slots["active"], "trial": True, "tries": 0,
                     "pending": None, "rolled_back": False}
        else:
            slots["pending"] = None  # a staged image that is not there: forget it
    previous = slots["previous"]
    can_fall_back = previous is not None and previous != slots["active"] and ok(previous)
    if slots["trial"]:
        slots["tries"] += 1
        if can_fall_back and (slots["tries"] > MAX_TRIES or not ok(slots["active"])):
            slots = _roll_back(slots)  # the trial never confirmed itself, or is not there
    elif can_fall_back and not ok(slots["active"]):
        slots = _roll_back(slots)
    return slots


def status(running):
    """Flags for the status word of the image running from slot `running`."""
    slots = load()
    return {"trial": slots["trial"] and slots["active"] == running,
            "ota": slots["pending"] is not None,
            "rolled_back": slots["rolled_back"]}


def confirm(running):
    slots = load()
    if slots["active"] == running and slots["trial"]:
        slots["trial"] = False
        slots["tries"] = 0
        record.write(SLOTS, slots)  # raises OSError: the master hears exception 04


def reset(code=EXIT_REBOOT):
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):
        pass
    sys.exit(code)  # unix port: the supervisor restarts us, as a reset would


def start():
    wdt, wdt_ms = start_watchdog()
    before = load()
    slots = choose(before)
    if slots != before:
        save(slots)
    running = slots["active"]
    try:
        sys.path.insert(0, ROOT + running)
        from app import node

        node.main(ROOT, {"slot": running, "wdt": wdt, "wdt_ms": wdt_ms,
                         "status": lambda: status(running),
                         "confirm": lambda: confirm(running)})
    except Exception as exc:  # noqa: BLE001 - SystemExit (a reboot, end of feed) passes through
        # An image that raises (at import or later) resets the board: a trial's counter
        # advances towards the roll-back instead of the board sitting in a REPL.
        sys.print_exception(exc)
        reset(EXIT_CRASH)


if __name__ == "__main__":  # the board runs this file as __main__; tests import it
    start()
