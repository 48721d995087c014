"""Real parts for ingest tests and the ingest benchmark: Mosquitto started with the fleet's own
generated configuration, ingest as real ``edgefleet fleet ingest`` processes (killable with
SIGKILL), and fast C publishers (``mosquitto_pub -l -q 1``) fed seq-numbered telemetry."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fleet.ingest.broker import BrokerConfig, Listener, mosquitto_conf
from tests.gateway.mosquitto import HOST, Broker

MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
REPO = Path(__file__).resolve().parents[2]


class FleetBroker(Broker):
    """Mosquitto on the configuration ``fleet.ingest.broker.mosquitto_conf`` generates."""

    def _render(self, extra: str) -> str:
        config = BrokerConfig(persistence_location=self.workdir,
                              listeners=(Listener(self.port, HOST),), log_file=self.log,
                              max_queued_bytes=2 << 30)
        return mosquitto_conf(config) + extra

    def dropped_outgoing(self) -> bool:
        return "Outgoing messages are being dropped" in self.log_text()


def write_config(path: Path, *, database_url: str, data_dir: Path, broker: Broker,
                 client_id: str, share_group: str = "fleet", batch_max: int = 500,
                 extra_ingest: str = "") -> Path:
    path.write_text(
        f'secret_key = "{secrets.token_urlsafe(48)}"\n'
        f'data_dir = "{data_dir}"\n'
        f'database_url = "{database_url}"\n'
        f"run_timers = false\n"
        f"[ingest]\n"
        f'host = "{broker.host}"\n'
        f"port = {broker.port}\n"
        f'client_id = "{client_id}"\n'
        f'share_group = "{share_group}"\n'
        f"batch_max = {batch_max}\n"
        f"{extra_ingest}")
    return path


class IngestProcess:
    """One ``edgefleet fleet ingest CONFIG`` process; ``kill()`` is SIGKILL, no goodbye."""

    def __init__(self, config: Path, log: Path, *,
                 entry: Sequence[str] = ("-m", "edgefleet")) -> None:
        self.config = config
        self.log = log
        #: How Python is told to run the CLI (the bench's profiler wraps it).
        self.entry = tuple(entry)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.entry, "-v", "fleet", "ingest", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def telemetry_line(device: str, epoch: str, seq: int, t0_ms: int) -> str:
    ts_ms = t0_ms + seq * 1000
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms / 1000)) + \
        f".{ts_ms % 1000:03d}Z"
    return json.dumps({"v": 1, "device": device, "class": "fire", "ts": ts, "epoch": epoch,
                       "seq": seq, "values": {"temperature": 20 + seq % 50 / 10,
                                              "smoke": 0.012, "co": 3.0, "battery": 3.61},
                       "units": {"temperature": "°C", "smoke": "dB/m"}},
                      separators=(",", ":"))


def publish_lines(broker: Broker, streams: dict[str, Sequence[str]], *, chunk: int = 200,
                  pause_s: float = 0.0, on_chunk: Callable[[int], None] | None = None) -> int:
    """Publish each topic's lines through its own ``mosquitto_pub -l -q 1`` (a C client),
    round-robin in chunks; returns when every publisher has exited (all PUBACKed)."""
    procs = {
        topic: subprocess.Popen([MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port),
                                 "-q", "1", "-l", "-t", topic, "-V", "mqttv5"],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        for topic in streams}
    sent = 0
    offsets = dict.fromkeys(streams, 0)
    try:
        while any(offsets[t] < len(lines) for t, lines in streams.items()):
            for topic, lines in streams.items():
                start = offsets[topic]
                part = lines[start:start + chunk]
                if part:
                    stdin = procs[topic].stdin
                    assert stdin is not None
                    stdin.write(("\n".join(part) + "\n").encode())
                    stdin.flush()
                    offsets[topic] = start + len(part)
                    sent += len(part)
            if on_chunk is not None:
                on_chunk(sent)
            if pause_s:
                time.sleep(pause_s)
    finally:
        for proc in procs.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for topic, proc in procs.items():
            if proc.wait(timeout=300) != 0:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"mosquitto_pub for {topic} failed: {err}")
            if proc.stderr is not None:
                proc.stderr.close()
    return sent


def publish_one(broker: Broker, topic: str, payload: str) -> None:
    subprocess.run([MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), "-q", "1",
                    "-t", topic, "-m", payload, "-V", "mqttv5"], check=True, timeout=30)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_for_count(count: Callable[[], int], target: int, *, stall_s: float, what: str,
                   interval: float = 0.2) -> None:
    """Wait until ``count()`` reaches ``target``; fail once it has not moved for ``stall_s``
    (a loss shows as a count that stops short, not as a slow test)."""
    last, moved = count(), time.monotonic()
    while last < target:
        time.sleep(interval)
        now = count()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise AssertionError(f"{what}: stuck at {last} of {target} for {stall_s:g}s")


class Background(threading.Thread):
    """Run ``fn`` in a thread and re-raise its exception on ``join_checked``."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc

    def join_checked(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"background work still running after {timeout:g}s")
        if self.error is not None:
            raise self.error
