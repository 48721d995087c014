"""A real victoria-metrics (Debian's) for tests: the InfluxDB v2 write API on a free loopback port,
and a reader that exports every sample of a series back (after a forced flush)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.gateway.mosquitto import HOST, free_port

VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class Victoria:
    def __init__(self, workdir: Path, extra_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.extra_args = extra_args or []
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "victoria.log"

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self._log.open("ab")
        self._proc = subprocess.Popen(
            [VICTORIA, f"-storageDataPath={self.workdir / 'data'}",
             f"-httpListenAddr={HOST}:{self.port}", "-retentionPeriod=100y", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"victoria-metrics did not answer on {self.port} in {timeout}s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def export(self, metric: str) -> list[dict[str, Any]]:
        """Every series named ``metric`` (``<measurement>_<field>``) with all its samples:
        ``[{"metric": {labels}, "values": [...], "timestamps": [...]}, ...]``."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        query = urllib.parse.urlencode({"match[]": f'{{__name__="{metric}"}}'})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as r:
            body = r.read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]
