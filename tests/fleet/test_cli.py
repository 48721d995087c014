"""The fleet's command line, run as an operator would: create-admin prints a one-time password
that logs into a served fleet; serve with nothing configured starts on embedded defaults with a
per-installation secret; a shared PostgreSQL must be migrated before serve starts on it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

EDGEFLEET = [sys.executable, "-m", "edgefleet.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("EDGEFLEET_FLEET_SECRET_KEY", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_create_admin_then_serve_then_log_in_with_the_one_time_password(tmp_path: Path) -> None:
    data = tmp_path / "fleet-data"
    out = subprocess.run([*EDGEFLEET, "fleet", "create-admin", "--data", str(data)],
                         capture_output=True, text=True, env=_env(), timeout=120, check=True)
    password = re.search(r"one-time password: (\S+)", out.stdout)
    assert password, out.stdout
    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600
    assert password.group(1) not in out.stderr  # the log never carries it
    port = _free_port()
    server = subprocess.Popen([*EDGEFLEET, "fleet", "serve", "--data", str(data),
                              "--port", str(port)], env=_env(), stderr=subprocess.PIPE,
                             text=True)
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{base}/auth/login", json={"username": "admin",
                                                   "password": password.group(1)})
        assert r.status_code == 200 and r.json()["must_change_password"] is True
        # a second create-admin for the same name is refused, not a reset
        again = subprocess.run([*EDGEFLEET, "fleet", "create-admin", "--data", str(data)],
                               capture_output=True, text=True, env=_env(), timeout=120)
        assert again.returncode != 0
        assert "user 'admin' exists" in again.stderr and "Traceback" not in again.stderr
    finally:
        server.terminate()
        server.wait(20)


def test_serve_refuses_an_unmigrated_postgresql(postgres, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    postgres.admin("CREATE DATABASE unmigrated")
    cfg = tmp_path / "fleet.toml"
    cfg.write_text(f'database_url = "{postgres.url("unmigrated")}"\n'
                   f'secret_key = "{"s3cr3t-" * 6}"\n')
    r = subprocess.run([*EDGEFLEET, "fleet", "serve", str(cfg), "--port", str(_free_port())],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode != 0 and "edgefleet fleet migrate" in r.stderr
    r = subprocess.run([*EDGEFLEET, "fleet", "migrate", str(cfg)], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    from fleet.core.migrate import is_current

    assert is_current(postgres.url("unmigrated"))


def test_a_config_file_with_a_default_secret_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('secret_key = "changeme"\n')
    r = subprocess.run([*EDGEFLEET, "fleet", "migrate", str(cfg)], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode != 0
    assert "fleet.toml: secret_key" in r.stderr and "well-known" in r.stderr
