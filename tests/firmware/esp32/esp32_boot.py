# The boot file (firmware/main.py) against the strict stand-in of MicroPython's `machine`
# (esp32_machine.py), on the MicroPython unix port: on a board `from machine import WDT` works,
# so main.py takes its hardware path, the one the unix port's software watchdog never runs.
# A new image that raises at import must find the watchdog already armed (an import that hangs
# is then reset too) and must end in machine.reset(), so the trial counter advances instead of
# the board sitting in the REPL. Run by tests/firmware/test_esp32_hal.py; not a pytest module
# (the name does not start with test_), because it replaces `machine` in sys.modules.
import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
for _p in (_here, _here + "/../mp_unit"):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import os  # noqa: E402

import esp32_machine as machine  # noqa: E402

sys.modules["machine"] = machine

import mptest  # noqa: E402  (puts firmware/ on sys.path: main.py, picker.py, record.py)

ROOT = os.getenv("EF_ROOT").rstrip("/") + "/"  # an empty directory, made by the caller

# slot a holds an image whose node module notes how many watchdogs exist, then fails to import
NODE_PY = """import machine
machine.wdts_at_app_import = len(machine.wdts)
raise ImportError("no module named app.lost")
"""


def _plant_root():
    for d in (ROOT, ROOT + "a", ROOT + "a/app", ROOT + "data"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    with open(ROOT + "a/app/__init__.py", "w") as fh:
        fh.write("")
    with open(ROOT + "a/app/node.py", "w") as fh:
        fh.write(NODE_PY)


def test_a_slot_that_raises_at_import_resets_the_board_with_the_watchdog_armed_first():
    _plant_root()
    del machine.wdts[:]
    del machine.resets[:]
    try:
        import main  # noqa: F401  (main.py boots at import)
    except machine.ResetCalled:
        pass
    assert machine.wdts_at_app_import == 1, machine.wdts  # armed before the app was imported
    wdt = machine.wdts[0]
    assert wdt.timeout == 8000, wdt.timeout              # main.WDT_MS, the ESP32 task watchdog
    assert len(machine.resets) == 1                      # the exception reset the board


mptest.run(globals())
