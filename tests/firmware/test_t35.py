"""The firmware's copy of the t3.5 formula (MicroPython cannot import hardware/serialline.py)
against the one the gateway, the bus hub and the benchmarks use."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hardware.serialline import t35

STANDARD_BAUDS = [1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200]


@pytest.mark.parametrize("baud", STANDARD_BAUDS)
def test_firmware_t35_is_the_serial_line_t35(firmware_path: Path, baud: int) -> None:
    from app.node import t35_us

    # whole microseconds, never shorter than the rule: a node that cut a frame early would
    # split a request whose bytes came with the longest gap the standard allows (t1.5)
    assert t35_us(baud) == math.ceil(t35(baud) * 1e6 - 1e-6)


def test_above_19200_the_gap_is_the_fixed_1750_us(firmware_path: Path) -> None:
    from app.node import t35_us

    assert [t35_us(b) for b in (38400, 57600, 115200)] == [1750, 1750, 1750]
    assert t35_us(19200) == 2006  # 3.5 x 11 bits at 19200 = 2005.2 us
