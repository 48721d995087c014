"""Independent Modbus masters read the firmware through `edgefleet sim bus`, as in the field."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import minimalmodbus
import pytest

from hardware.regmap import load_maps
from hardware.serialline import allow_parity_on_ptys
from tests.bus.conftest import Master, wait_answering


@pytest.fixture(scope="module")
def sim_bus_cli() -> Iterator[str]:
    """`edgefleet sim bus --node 1:fire --node 2:flood --node 3:water --node 4:air`; the first
    line of its standard output is the master pty. One for the module: its tests only read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet.cli", "sim", "bus", "--node", "1:fire",
         "--node", "2:flood", "--node", "3:water", "--node", "4:air"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    assert port.startswith("/dev/"), f"first line should be the pty, got {port!r}"
    master = Master(port)
    try:
        for address in (1, 2, 3, 4):
            wait_answering(master, address)
    finally:
        master.close()
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_mbpoll_reads_every_node_at_19200_8E1(sim_bus_cli: str) -> None:
    mbpoll = shutil.which("mbpoll")
    assert mbpoll, "mbpoll (libmodbus) missing: scripts/system-deps.sh installs it"
    maps = load_maps()
    for address, cls in [(1, "fire"), (2, "flood"), (3, "water"), (4, "air")]:
        out = subprocess.run(
            [mbpoll, "-m", "rtu", "-b", "19200", "-P", "even", "-a", str(address), "-t", "3",
             "-0", "-r", "0", "-c", "6", "-1", sim_bus_cli],
            capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stdout + out.stderr
        regs = {int(a): int(v) for a, v in re.findall(r"\[(\d+)\]:\s+(-?\d+)", out.stdout)}
        assert regs[0] == 1, out.stdout
        assert regs[1] == maps.classes[cls].class_id, out.stdout


def test_minimalmodbus_reads_scaled_values(sim_bus_cli: str) -> None:
    allow_parity_on_ptys()
    inst = minimalmodbus.Instrument(sim_bus_cli, 1)
    inst.serial.baudrate = 19200
    inst.serial.parity = minimalmodbus.serial.PARITY_EVEN
    inst.serial.timeout = 0.5
    try:
        assert inst.read_register(1, functioncode=4) == 1  # fire
        temperature = inst.read_register(17, number_of_decimals=1, functioncode=4, signed=True)
        assert 15.0 < temperature < 45.0  # a room in Ho Chi Minh City
        smoke_alarm = inst.read_register(16, number_of_decimals=2, functioncode=3)
        assert smoke_alarm == 4.0
    finally:
        inst.serial.close()


def test_sim_bus_refuses_bad_node_specs_clearly() -> None:
    for spec, message in [("1-fire", "ADDRESS:CLASS"), ("300:fire", "1-247"),
                          ("1:smoke", "fire, flood, water, air")]:
        out = subprocess.run([sys.executable, "-m", "edgefleet.cli", "sim", "bus", "--node", spec],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert message in out.stderr, out.stderr
