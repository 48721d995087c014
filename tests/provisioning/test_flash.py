"""`edgefleet flash` against the MicroPython unix port's REPL on a pty (mpremote, `--resume`):
a signed release, identity, thresholds and trust keys go on, are read back, and the flashed
node then boots and answers Modbus with the identity and threshold it was given."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import minimalmodbus
import pytest
from mpremote.transport_serial import SerialTransport

from contracts.release import BadHash, WrongTarget
from edgefleet.cli import main
from hardware.mpy import tool_beside_python
from hardware.serialline import allow_parity_on_ptys
from provisioning import release as rel
from provisioning.flash import FlashError, NodeIdentity, plan, thresholds_record, write

MICROPYTHON = tool_beside_python("micropython")
SOCAT = shutil.which("socat")


def _wait_path(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A MicroPython unix port at its REPL on a pty: (tty path for mpremote, its flash root)."""
    assert MICROPYTHON and SOCAT, "needs the MicroPython unix port and socat"
    root = tmp_path / "flash"
    root.mkdir()
    tty = tmp_path / "tty"
    proc = subprocess.Popen([SOCAT, f"PTY,link={tty},raw,echo=0",
                             f"EXEC:{MICROPYTHON},pty,raw,echo=0"],
                            cwd=root, start_new_session=True)
    try:
        _wait_path(tty)
        yield tty, root
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(release, trust file): a fire release signed by the key the trust file holds."""
    d = tmp_path_factory.mktemp("flashrel")
    rel.generate_key(d / "k.key")
    trust = rel.device_trust(rel.make_keyset(1, [d / "k.pub"], []), (1, 0, 0))
    (d / "trust.json").write_text(json.dumps(trust))
    out = rel.build(d / "fire-1.4.0", version=(1, 4, 0), min_version=(1, 3, 0),
                    device_class="fire", board="esp32")
    rel.sign(out, d / "k.key")
    return out, d / "trust.json"


def test_the_plan_refuses_a_release_the_node_would_refuse(signed: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    release, trust_file = signed
    trust = json.loads(trust_file.read_text())
    with pytest.raises(WrongTarget):
        plan(release, NodeIdentity("flood-1", "flood", 2), trust)
    tampered = Path(shutil.copytree(release, tmp_path / "r"))
    node = tampered / "files" / "app" / "node.mpy"
    node.write_bytes(node.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BadHash):
        plan(tampered, NodeIdentity("fire-1", "fire", 1), trust)
    with pytest.raises(FlashError, match="1-247"):
        plan(release, NodeIdentity("fire-1", "fire", 248), trust)


def test_thresholds_are_checked_against_the_register_map_and_stored_as_the_node_reads_them(
        firmware_path: Path, tmp_path: Path) -> None:
    from app import store

    record = thresholds_record("fire", {"smoke_alarm": 4.5, "heat_fixed": 60.0})
    (tmp_path / "config.json").write_bytes(record)
    assert store.read(str(tmp_path / "config.json")) == {
        "class": "fire", "holding": {"smoke_alarm": 450, "heat_fixed": 600}}
    with pytest.raises(FlashError, match="outside"):
        thresholds_record("fire", {"smoke_alarm": 50.0})
    with pytest.raises(FlashError, match="no holding register"):
        thresholds_record("fire", {"water_level": 1.0})


class FlakyLink:
    """The real board's transport with one fault a healthy board cannot be made to show: one
    byte of one file altered on its way to flash."""

    def __init__(self, transport: SerialTransport, victim: str) -> None:
        self.t = transport
        self.victim = victim

    def exec(self, command: str) -> bytes:
        return self.t.exec(command)  # type: ignore[no-any-return]

    def eval(self, expression: str) -> object:
        return self.t.eval(expression)

    def fs_writefile(self, dest: str, data: bytes, chunk_size: int = 256,
                     progress_callback: object = None) -> None:
        if dest == self.victim:
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        self.t.fs_writefile(dest, data, chunk_size=chunk_size,
                            progress_callback=progress_callback)


def test_a_file_that_reaches_flash_altered_fails_the_read_back(
        board: tuple[Path, Path], signed: tuple[Path, Path]) -> None:
    tty, _root = board
    release, trust_file = signed
    files = plan(release, NodeIdentity("fire-1", "fire", 1),
                 json.loads(trust_file.read_text()))
    transport = SerialTransport(str(tty))
    try:
        transport.enter_raw_repl(soft_reset=False)
        with pytest.raises(FlashError, match=r"read-back differs for a/app/node\.mpy$"):
            write(FlakyLink(transport, "a/app/node.mpy"), files)
        transport.exit_raw_repl()
    finally:
        transport.close()


def test_flashing_writes_reads_back_and_the_node_boots_with_its_identity(
        board: tuple[Path, Path], signed: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    tty, root = board
    release, trust_file = signed
    bus_node, bus_master = tmp_path / "bus-node", tmp_path / "bus-master"
    assert main(["flash", str(tty), str(release), "--trust", str(trust_file),
                 "--device-id", "hcmc-d1-fire-007", "--class", "fire", "--address", "7",
                 "--threshold", "smoke_alarm=4.5", "--extra", f"uart={bus_node}",
                 "--resume"]) == 0
    assert "read back and verified" in capsys.readouterr().out
    # what is on the board's flash is what the release and the identity say
    for name in json.loads((release / "manifest.json").read_bytes())["files"]:
        assert (root / "a" / name).read_bytes() == (release / "files" / name).read_bytes()
    node = json.loads((root / "data" / "node.json").read_text())
    assert node["device_id"] == "hcmc-d1-fire-007" and node["address"] == 7
    assert json.loads((root / "data" / "trust.json").read_text()) == \
        json.loads(trust_file.read_text())

    # and it boots: main.py picks slot a and the node answers on its RS-485 pty
    assert SOCAT is not None and MICROPYTHON is not None
    wire = subprocess.Popen([SOCAT, f"pty,raw,echo=0,link={bus_node}",
                             f"pty,raw,echo=0,link={bus_master}"], start_new_session=True)
    booted = None
    try:
        _wait_path(bus_node)
        _wait_path(bus_master)
        booted = subprocess.Popen([MICROPYTHON, "main.py"], cwd=root, stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, EF_ROOT=str(root)),
                                  start_new_session=True)
        allow_parity_on_ptys()
        inst = minimalmodbus.Instrument(str(bus_master), 7)
        inst.serial.baudrate = 19200
        inst.serial.parity = minimalmodbus.serial.PARITY_EVEN
        inst.serial.timeout = 0.3
        deadline = time.monotonic() + 20
        while True:
            try:
                identity = inst.read_registers(0, 2, functioncode=4)
                break
            except (OSError, minimalmodbus.ModbusException):
                if time.monotonic() > deadline or booted.poll() is not None:
                    raise
        assert identity == [1, 1]  # register-map version 1, class 1 (fire)
        assert inst.read_register(16, number_of_decimals=2, functioncode=3) == 4.5
        inst.serial.close()
    finally:
        if booted is not None:
            _stop(booted)
        _stop(wire)
