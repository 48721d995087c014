"""``edgefleet demo`` as a user runs it: one command, the printed URL and one-time login work, the
fleet hears devices of all four classes from both gateways, and Ctrl-C leaves no process behind.

The test sends SIGINT to the demo's whole process group, as a terminal's Ctrl-C does. Every
descendant of the demo inherits a marker in its environment; after SIGINT the test looks
for that marker in every process on the machine (an orphan is re-parented to init, so walking
the demo's children would miss exactly the processes that matter).

A demo that is SIGKILLed runs no cleanup at all: its children must still end, by their pids,
within a few seconds (the lifeline's reaper, hardware/sim/lifeline.py)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None
                                and not Path("/usr/sbin/mosquitto").exists(),
                                reason="Mosquitto is not installed (apt-get install mosquitto)")


def _alive(pid: int) -> bool:
    """Running (a zombie has ended; only its exit status waits for its new parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _marked(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker.encode() in environ:
            found.append(int(entry.name))
    return found


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
    threading.Thread(target=pump, daemon=True).start()
    return out


def _read_until(out: queue.Queue[str], pattern: str, transcript: list[str],
                timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=0.5)
        except queue.Empty:
            continue
        transcript.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"{pattern!r} never printed:\n{''.join(transcript)}")


def test_the_demo_serves_both_gateways_four_classes_and_ctrl_c_leaves_no_process(
        tmp_path: Path) -> None:
    marker = f"EDGEFLEET_DEMO_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1", COLUMNS="120", **{key: value})
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "demo", "--port", "0",
                             "--state", str(tmp_path / "state"), "--duration", "300"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", env=env, start_new_session=True)
    transcript: list[str] = []
    try:
        out = _lines(proc)
        url = _read_until(out, r"dashboard: (http://\S+)/ui/", transcript, 75)[1]
        password = _read_until(out, r"admin login: admin\s+one-time password: (\S+)",
                               transcript, 5)[1]

        # The printed login works once, and only for setting one's own password first.
        auth = _signed_in(url, password)

        devices = httpx.get(f"{url}/api/v1/devices", params={"connectivity": "online",
                                                             "limit": 100}, headers=auth).json()
        online = devices["items"]
        assert {d["device_class"] for d in online} == {"fire", "flood", "water", "air"}
        by_gateway: dict[int, set[str]] = {}
        for d in online:
            by_gateway.setdefault(d["gateway_id"], set()).add(d["device_class"])
        assert len(by_gateway) >= 2, by_gateway
        # The readings are the firmware's, through the gateways: telemetry is being stored.
        flood = next(d for d in online if d["device_class"] == "flood")
        assert flood["last_seen"] is not None
        assert _marked(marker), "the marker reaches no process: the check below would be empty"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    leftover = _marked(marker)
    for pid in leftover:  # clean up before failing, by pid
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, "".join(transcript)
    assert not leftover, f"processes left after Ctrl-C: {leftover}"


def test_a_sigkilled_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    log = open(tmp_path / "demo.log", "wb")  # noqa: SIM115 - the demo writes it, we read it
    marker = f"EDGEFLEET_DEMO_TEST={uuid.uuid4().hex}"
    key, value = marker.split("=")
    env = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1", COLUMNS="120", **{key: value})
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "demo", "--port", "0",
                             "--state", str(tmp_path / "state"), "--duration", "300"],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    children: list[int] = []
    lines: list[str] = []
    try:
        # Every kind of child running: the broker, the fleet, the firmware nodes and the
        # gateways (started last). No need to wait for the devices to come online.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            children = [pid for pid in _marked(marker) if pid != proc.pid]
            lines = [_cmdline(pid) for pid in children]
            if (sum("gateway run" in c for c in lines) == 2 and any("mosquitto" in c for c in lines)
                    and any("fleet serve" in c for c in lines)
                    and any("micropython" in c for c in lines)):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the demo never started all its parts: {lines}\n"
                                 + (tmp_path / "demo.log").read_text(errors="replace"))
        os.kill(proc.pid, signal.SIGKILL)  # no handler, no cleanup: only the kernel acts
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.1)
        survivors = {pid: _cmdline(pid) for pid in children if _alive(pid)}
        assert not survivors, f"orphans of the SIGKILLed demo: {survivors}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in set(children) | set(_marked(marker)):  # clean up before failing, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()


def _signed_in(url: str, password: str) -> dict[str, str]:
    """The demo's admin, past the one-time password (which signs in only to set a new one)."""
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": password})
    assert r.status_code == 200 and r.json()["must_change_password"] is True
    token = r.json()["access_token"]
    new = "a-demo-visitor-own-Pa55"
    r = httpx.post(f"{url}/api/v1/auth/password", headers={"Authorization": f"Bearer {token}"},
                   json={"old_password": password, "new_password": new})
    assert r.status_code == 204, r.text
    r = httpx.post(f"{url}/api/v1/auth/login", json={"username": "admin", "password": new})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.slow  # the day plays in real time: its fire is lit 125 s in (about 3 min in all)
def test_the_demo_day_raises_the_morning_air_the_storm_flood_and_the_evening_fire_in_the_fleet(
        tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "edgefleet.cli", "demo", "--port", "0",
                             "--state", str(tmp_path / "state"), "--duration", "260"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", env=dict(os.environ, PYTHONIOENCODING="utf-8",
                                                       NO_COLOR="1", COLUMNS="120"),
                            start_new_session=True)
    transcript: list[str] = []
    seen: dict[str, list[str]] = {}
    try:
        out = _lines(proc)
        url = _read_until(out, r"dashboard: (http://\S+)/ui/", transcript, 75)[1]
        auth = _signed_in(url, _read_until(
            out, r"admin login: admin\s+one-time password: (\S+)", transcript, 5)[1])
        # Each episode must reach the fleet's alarms API while the day plays (the scenario's
        # episodes: PM2.5 from 5 s, the storm from 60 s, the kitchen fire from 125 s).
        deadline = time.monotonic() + 220
        while ((set(seen) != {"air", "flood", "fire"} or "stage3" not in seen["flood"])
               and time.monotonic() < deadline):
            r = httpx.get(f"{url}/api/v1/alarms", headers=auth, params={"limit": 500})
            assert r.status_code == 200, r.text
            rows = r.json()
            for a in rows["items"] if isinstance(rows, dict) else rows:
                seen.setdefault(a["device_class"], [])
                if a["type"] not in seen[a["device_class"]]:
                    seen[a["device_class"]].append(a["type"])
            while not out.empty():
                transcript.append(out.get())
            time.sleep(1.0)  # polling the API: no event to wait on from outside the demo
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert {"air", "flood", "fire"} <= set(seen), f"alarms by class: {seen}\n" + "".join(
        transcript[-60:])
    # The flood went past alert III (the gauge's top stage), not only its first warning.
    assert "stage3" in seen["flood"], seen
