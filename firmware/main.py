# Boot: start the watchdog, let the slot picker choose an application image, hand over to it,
# and reset the board when the image fails.
#
# The watchdog starts here, before any application code is imported, so an image that hangs at
# import time resets the board like one that raises; an exception anywhere in the application
# (an import error in a new slot included) resets the board at once, so a trial image's boot
# counter advances towards the roll-back instead of the board sitting in the REPL. The slot logic
# is in /picker.py (see there for the record and the update sequence); it is unloaded before the
# application starts. This file, /picker.py and /record.py never change in an update; only the
# slots /a/app and /b/app do.
import gc
import os
import sys
import time

# Collect after every 2 KB allocated from the very first import: without it garbage from
# loading modules piles up to the heap's end and fragments it before the node even starts.
gc.threshold(2048)

WDT_MS = 8000  # ESP32 task watchdog; the node loop feeds it at least every WDT_MS / 2
EXIT_CRASH = 76  # unix port: a reset after an exception (the supervisor restarts and counts it)
_getenv = getattr(os, "getenv", None)


class SoftWatchdog:
    """The unix port's machine.WDT: a thread that ends the process when feed() comes late.

    The process dies of SIGALRM (sent by the shell to its parent, the interpreter: the unix port
    has neither os.getpid nor os.kill), which the simulator's supervisor treats as a watchdog
    reset. The watching thread allocates nothing while it waits (the unix port's threads share
    the heap without a lock)."""

    def __init__(self, timeout_ms):
        import _thread

        self.timeout_ms = timeout_ms
        self.feed()
        _thread.start_new_thread(self._watch, ())
        print("watchdog: armed %d ms" % timeout_ms)  # the simulator's supervisor reads it

    def feed(self):
        self._fed = time.ticks_ms()

    def _watch(self):
        while time.ticks_diff(time.ticks_ms(), self._fed) <= self.timeout_ms:
            time.sleep_ms(20)
        print("watchdog: not fed for %d ms: reset" % self.timeout_ms)
        os.system("kill -ALRM $PPID")


def start():
    root = _getenv("EF_ROOT") if _getenv else None
    root = (root.rstrip("/") + "/") if root else "/"
    # The hardware WDT, or the software one on the unix port, where EF_WDT_MS may override
    # the timeout (0: none, for a bare REPL session).
    timeout = int((_getenv("EF_WDT_MS") if _getenv else None) or WDT_MS)
    wdt = None
    if timeout > 0:
        try:
            from machine import WDT
        except ImportError:  # the unix port's machine module has no WDT
            wdt = SoftWatchdog(timeout)
        else:
            wdt = WDT(timeout=timeout)
    try:
        import picker

        slot = picker.boot(root, wdt)  # a pending OTA check feeds the watchdog meanwhile
        del sys.modules["picker"]  # the picker's code leaves the heap before the app's arrives
        picker = None
        gc.collect()
        sys.path.insert(0, root + slot)
        from app import node

        node.main(root, {"slot": slot, "wdt": wdt, "wdt_ms": timeout if wdt else 0})
    except Exception as exc:  # noqa: BLE001 - SystemExit (a reboot, end of feed) passes through
        sys.print_exception(exc)
        try:
            import machine
            machine.reset()
        except (ImportError, AttributeError):
            pass
        sys.exit(EXIT_CRASH)  # unix port: the supervisor restarts us, as a reset would


start()
