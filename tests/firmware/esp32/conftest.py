"""test_esp32_hal.py is a MicroPython-style script, not a pytest module: it installs stand-ins
for ``machine`` and ``select`` in ``sys.modules`` and runs its own tests (mptest) when executed.
tests/firmware/test_esp32_hal.py runs it, on the MicroPython unix port and on CPython, each in its
own process. Collected by pytest, it would run at import and leave the fake ``select`` in the
test process, where the simulator's bus hub (used in process by tests/firmware/test_ota_window.py)
then fails with "object not pollable"."""

collect_ignore = ["test_esp32_hal.py"]
