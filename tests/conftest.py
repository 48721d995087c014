"""Shared fixtures: real firmware nodes on a real (simulated) RS-485 bus."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"


@pytest.fixture
def firmware_path() -> Iterator[Path]:
    """Put firmware/ on sys.path so CPython tests can import the device's pure modules."""
    sys.path.insert(0, str(FIRMWARE))
    yield FIRMWARE
    sys.path.remove(str(FIRMWARE))
    for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        del sys.modules[name]


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1,
             what: str = "condition") -> object:
    """Poll until predicate() is truthy; fail with what we were waiting for."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
