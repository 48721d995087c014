"""Durable file writes on CPython: the one atomic replace every part uses for its small state
files (the gateway's OTA jobs, trust and bundle cache; the CA's index and revocation list).

It lives in the bottom layer so the gateway, the fleet and provisioning share one copy without
importing each other. The firmware keeps its own copies (firmware/app/ota_boot.py,
firmware/picker.py: MicroPython has no ``os.replace`` with the same guarantees on every port);
this module never runs on a device.

The rule: write a temporary file beside the target, fsync it, rename it over the target, fsync
the directory. A power cut leaves the old file or the new one, never a mix or an empty file.
These calls block on the disk (an SD card can take a second): from asyncio code run them in a
thread (``asyncio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["fsync_dir", "write_atomic", "write_json_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, durably and atomically; the parent is created if
    missing. ``mode`` is the new file's permission (0600 by default: state files may hold a
    token or a key id list an operator should not have to think about)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, value: Any, *, mode: int = 0o600, indent: int | None = None
                      ) -> None:
    """:func:`write_atomic` of ``value`` as JSON (a trailing newline when indented)."""
    text = json.dumps(value, indent=indent) + ("\n" if indent is not None else "")
    write_atomic(path, text.encode(), mode=mode)
