"""``edgefleet demo``: the whole stack on one machine, every part started by its own entry point.

What runs (in this order, with a progress bar while it starts):

1. Mosquitto, with the loss-proof configuration the fleet needs (:mod:`fleet.ingest.broker`).
2. The fleet (``edgefleet fleet serve CONFIG``: SQLite, the embedded telemetry store, MQTT ingest
   inside), with an admin made by ``edgefleet fleet create-admin`` for the demo's own seeding.
3. A seeded registry, through the fleet's API: Ho Chi Minh City, a few of its wards, sites at
   real places in District 1, the two gateways and their devices, and a user of each role.
4. Two simulated RS-485 buses of real-firmware nodes (:class:`hardware.sim.simbus.SimBus`), all
   four classes on each, with their physics (:class:`hardware.sim.simrun.PhysicsFeed`).
5. One gateway process per bus (``edgefleet gateway run CONFIG``, a generated config).
6. Once every device is online in the fleet, the day's scenario (``day_in_hcmc``) on both buses.

It prints the dashboard URL and a one-time admin login (set your own password at first sign-in).
Ctrl-C (or SIGTERM, or ``--duration``) stops everything, children first, and waits for each one.
A demo that is killed outright (SIGKILL, a crash) cannot do that: its children are on its
lifeline (:mod:`hardware.sim.lifeline`), whose reaper ends them within a few seconds.
All files (configs, logs, the fleet's data) live in one state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fleet.ingest.broker import BrokerConfig, Listener, mosquitto_conf
from hardware.sim import lifeline
from hardware.sim.scenario import Event, Scenario, load_scenario
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed

log = logging.getLogger(__name__)

SCENARIO = "day_in_hcmc"
START_TIMEOUT_S = 120.0     # every device online in the fleet (nine MicroPython nodes booting)
STOP_TIMEOUT_S = 15.0       # per child, after SIGTERM, before SIGKILL
MOSQUITTO_HINT = "install it with: sudo apt-get install mosquitto   (or run ./dev.sh, which does)"

# The registry: (ward, site, latitude, longitude). Real places in District 1.
CITY = "Thành phố Hồ Chí Minh"
SITES = [
    ("Phường Bến Thành", "Chợ Bến Thành", 10.7725, 106.6980),
    ("Phường Bến Thành", "Trường THCS Văn Lang", 10.7698, 106.6935),
    ("Phường Sài Gòn", "Nhà hát Thành phố", 10.7766, 106.7031),
    ("Phường Sài Gòn", "Bến Bạch Đằng", 10.7744, 106.7067),
    ("Phường Cầu Ông Lãnh", "Trạm bơm Calmette", 10.7672, 106.6989),
]


def _ring(*corners: tuple[float, float]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[lon, lat] for lon, lat in corners]
                                               + [[corners[0][0], corners[0][1]]]]}


# The wards' outlines as the registry holds them (GeoJSON, [longitude, latitude]). Sketched
# around the demo's sites along the streets that bound them, sharing their edges: good enough
# to see which ward a site is in, not survey boundaries.
WARD_OUTLINES = {
    "Phường Bến Thành": _ring((106.6880, 10.7760), (106.6950, 10.7800), (106.6995, 10.7790),
                              (106.7010, 10.7700), (106.6985, 10.7690), (106.6900, 10.7660),
                              (106.6860, 10.7700)),
    "Phường Sài Gòn": _ring((106.6995, 10.7790), (106.6950, 10.7850), (106.7040, 10.7905),
                            (106.7110, 10.7830), (106.7095, 10.7745), (106.7065, 10.7705),
                            (106.7010, 10.7700)),
    "Phường Cầu Ông Lãnh": _ring((106.6900, 10.7660), (106.6985, 10.7690), (106.7010, 10.7700),
                                 (106.7065, 10.7705), (106.7060, 10.7640), (106.6990, 10.7600),
                                 (106.6910, 10.7620)),
}


@dataclass(frozen=True)
class Node:
    address: int
    cls: str
    key: str
    name: str
    site: str


@dataclass(frozen=True)
class GatewaySpec:
    key: str
    name: str
    site: str
    nodes: tuple[Node, ...]


GATEWAYS = (
    GatewaySpec("gw-ben-thanh", "Gateway Chợ Bến Thành", "Chợ Bến Thành", (
        Node(1, "fire", "bt-fire-1", "Đầu báo khói kho hàng", "Chợ Bến Thành"),
        Node(2, "flood", "bt-flood-1", "Mực nước cống Lê Lợi", "Chợ Bến Thành"),
        Node(3, "water", "bt-water-1", "Chất lượng nước chợ", "Chợ Bến Thành"),
        Node(4, "air", "bt-air-1", "Quan trắc không khí Văn Lang", "Trường THCS Văn Lang"),
    )),
    GatewaySpec("gw-sai-gon", "Gateway Nhà hát", "Nhà hát Thành phố", (
        Node(1, "fire", "sg-fire-1", "Đầu báo khói sân khấu", "Nhà hát Thành phố"),
        Node(2, "flood", "sg-flood-1", "Mực nước Bến Bạch Đằng", "Bến Bạch Đằng"),
        Node(3, "water", "sg-water-1", "Áp lực nước Calmette", "Trạm bơm Calmette"),
        Node(4, "air", "sg-air-1", "Quan trắc không khí Nhà hát", "Nhà hát Thành phố"),
        Node(5, "fire", "sg-fire-2", "Đầu báo khói bếp nhà hàng", "Bến Bạch Đằng"),
    )),
)

# username, role, area (None = the city); each gets a one-time password from the API.
USERS = (("pccc", "fire-safety", None), ("kythuat", "technician", None),
         ("capnuoc", "utility", "Phường Bến Thành"), ("xem", "viewer", None))


class StackError(RuntimeError):
    """A part did not start; the message says which and where its log is."""


def free_port(preferred: int = 0) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgefleet.cli", *args]


def for_bus(scenario: Scenario, addresses: set[int]) -> Scenario:
    """The scenario's events that reach this bus: class events everywhere (rain falls on every
    gauge), node events only where that address is."""
    return dataclasses.replace(scenario, events=tuple(
        e for e in scenario.events if e.node is None or e.node in addresses))


class Stack:
    def __init__(self, state: Path, *, port: int = 8080,
                 on_event: Callable[[Event], None] | None = None,
                 gateways: Sequence[GatewaySpec] = GATEWAYS,
                 sites: Sequence[tuple[str, str, float, float]] = SITES,
                 users: Sequence[tuple[str, str, str | None]] = USERS) -> None:
        self.state = state
        self.gateways, self.sites, self.users = tuple(gateways), tuple(sites), tuple(users)
        self.port = free_port(port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.broker_port = free_port()
        self.on_event = on_event
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.buses: dict[str, SimBus] = {}
        self.feeds: dict[str, PhysicsFeed] = {}
        self.admin_password = ""
        self.user_passwords: dict[str, str] = {}
        self._seeder = ""
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    # -- processes ----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        logfile = self.state / "logs" / f"{name}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.state,
                                    **lifeline.spawn_options())
        self.procs[name] = proc
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return proc

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; see "
                             f"{self.state / 'logs' / (name + '.log')}")

    # -- the parts ----------------------------------------------------------------------------
    def start_broker(self) -> None:
        mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                                  if Path("/usr/sbin/mosquitto").exists() else "")
        if not mosquitto:
            raise StackError(f"Mosquitto is not installed; {MOSQUITTO_HINT}")
        persistence = self.state / "mosquitto"
        persistence.mkdir(parents=True, exist_ok=True)
        conf = self.state / "mosquitto.conf"
        conf.write_text(mosquitto_conf(BrokerConfig(
            persistence_location=persistence,
            listeners=(Listener(self.broker_port, "127.0.0.1"),),
            max_queued_bytes=256 << 20)))
        self._spawn("mosquitto", [mosquitto, "-c", str(conf)])
        self._wait(lambda: _port_open(self.broker_port), "mosquitto", 10)

    def start_fleet(self) -> None:
        config = self.state / "fleet.toml"
        config.write_text(
            f'data_dir = "{self.state / "fleet-data"}"\n'
            f'secret_key = "{secrets.token_urlsafe(48)}"\n'
            "escalation_poll_s = 1.0\n\n"
            "[ingest]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.broker_port}\n"
            'client_id = "fleet-demo"\n'
            "batch_wait_s = 0.02\n")
        config.chmod(0o600)
        self._seeder = f"demo-seed-{secrets.token_hex(3)}"
        made = subprocess.run(_cli("fleet", "create-admin", str(config), "--username",
                                   self._seeder), capture_output=True, text=True, cwd=self.state,
                              check=False, **lifeline.spawn_options())
        if made.returncode != 0:
            raise StackError(f"edgefleet fleet create-admin failed: {made.stderr.strip()}")
        one_time = _one_time_password(made.stdout)
        self._spawn("fleet", _cli("fleet", "serve", str(config), "--port", str(self.port)))
        self._wait(self._fleet_up, "fleet", 60)
        # The seeding account sets its own password (only the change works before that).
        self._seed_password = secrets.token_urlsafe(24)
        token = self._login(self._seeder, one_time)
        r = httpx.post(f"{self.url}/api/v1/auth/password", headers=_bearer(token),
                       json={"old_password": one_time, "new_password": self._seed_password})
        r.raise_for_status()

    def _fleet_up(self) -> bool:
        self._check_alive("fleet")
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def seed(self) -> None:
        """The registry and the accounts, through the API as any admin would."""
        api = httpx.Client(base_url=f"{self.url}/api/v1", timeout=30, headers=_bearer(
            self.admin_token()))
        with api:
            def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                r = api.post(path, json=body)
                if r.status_code >= 400:
                    raise StackError(f"seeding {path} {body}: {r.status_code} {r.text[:300]}")
                result: dict[str, Any] = r.json()
                return result

            areas = {CITY: post("/areas", {"name": CITY, "kind": "city"})["id"]}
            sites: dict[str, int] = {}
            for ward, site, lat, lon in self.sites:
                if ward not in areas:
                    areas[ward] = post("/areas", {"name": ward, "kind": "ward",
                                                  "parent_id": areas[CITY],
                                                  "outline": WARD_OUTLINES.get(ward)})["id"]
                sites[site] = post("/sites", {"name": site, "area_id": areas[ward],
                                              "latitude": lat, "longitude": lon})["id"]
            for gw in self.gateways:
                gw_id = post("/gateways", {"key": gw.key, "name": gw.name,
                                           "site_id": sites[gw.site]})["id"]
                for node in gw.nodes:
                    post("/devices", {"gateway_id": gw_id, "key": node.key, "name": node.name,
                                      "device_class": node.cls, "address": node.address,
                                      "site_id": sites[node.site]})
            admin = post("/auth/users", {"username": "admin", "role": "admin"})
            self.admin_password = str(admin["one_time_password"])
            for username, role, area in self.users:
                body: dict[str, Any] = {"username": username, "role": role,
                                        "area_id": areas[area or CITY]}
                if role in ("fire-safety", "technician"):
                    body["fire_granted"] = True
                self.user_passwords[username] = str(post("/auth/users", body)["one_time_password"])

    def start_buses(self, baud: int = 19200, feed_period: float = 0.2) -> None:
        for gw in self.gateways:
            bus = SimBus([(n.address, n.cls) for n in gw.nodes], baud=baud,
                         workdir=self.state / "sim" / gw.key, feed_period=feed_period)
            feed = PhysicsFeed([(n.address, n.cls) for n in gw.nodes],
                               seed=len(self.buses) * 10, on_event=self._event)
            bus.feed = feed
            bus.start()
            self.buses[gw.key], self.feeds[gw.key] = bus, feed

    def start_gateways(self) -> None:
        for gw in self.gateways:
            config = self.state / f"{gw.key}.toml"
            config.write_text(gateway_config(gw, self.buses[gw.key].master_path,
                                             self.state / "gateways" / gw.key,
                                             self.broker_port))
            self._spawn(gw.key, _cli("-v", "gateway", "run", str(config)))

    def admin_token(self) -> str:
        """A bearer token of the demo's own admin (the one that seeded the registry)."""
        return self._login(self._seeder, self._seed_password)

    def online(self) -> dict[str, str]:
        """Device key -> connectivity, as the fleet reports it."""
        r = httpx.get(f"{self.url}/api/v1/devices", params={"limit": 1000}, timeout=10,
                      headers=_bearer(self.admin_token()))
        r.raise_for_status()
        return {d["key"]: d["connectivity"] for d in r.json()["items"]}

    def wait_online(self, progress: Callable[[int, int], None] | None = None) -> None:
        total = sum(len(gw.nodes) for gw in self.gateways)

        def all_online() -> bool:
            for gw in self.gateways:
                self._check_alive(gw.key)
            up = sum(1 for c in self.online().values() if c == "online")
            if progress:
                progress(up, total)
            return up == total
        self._wait(all_online, "every device online in the fleet", START_TIMEOUT_S, period=1.0)

    def play(self, name: str = SCENARIO) -> Scenario:
        scenario = load_scenario(name)
        for gw in self.gateways:
            self.feeds[gw.key].start_scenario(for_bus(scenario, {n.address for n in gw.nodes}))
        return scenario

    def _event(self, _t: float, event: Event) -> None:
        with self._lock:  # a class event fires on every bus: tell it once
            if event.index in self._seen:
                return
            self._seen.add(event.index)
        if self.on_event:
            self.on_event(event)

    # -- stopping -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Gateways first (they stop polling), then the buses, the fleet, the broker."""
        order = [gw.key for gw in self.gateways] + ["fleet", "mosquitto"]
        for name in order[:len(self.gateways)]:
            _terminate(self.procs.get(name))
        for name in order[:len(self.gateways)]:
            _reap(self.procs.get(name))
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                bus.stop()
        for name in order[len(self.gateways):]:
            _terminate(self.procs.get(name))
            _reap(self.procs.get(name))
        for name, proc in self.procs.items():  # anything else started
            if name not in order:
                _terminate(proc)
                _reap(proc)

    # -- helpers ------------------------------------------------------------------------------
    def _login(self, username: str, password: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/login", timeout=30,
                       json={"username": username, "password": password})
        if r.status_code != 200:
            raise StackError(f"login as {username}: {r.status_code} {r.text[:200]}")
        return str(r.json()["access_token"])

    def _wait(self, check: Callable[[], bool], what: str, timeout: float,
              period: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise StackError(f"{what}: not ready after {timeout:.0f} s; logs in "
                                 f"{self.state / 'logs'}")
            time.sleep(period)


def gateway_config(gw: GatewaySpec, port: str, storage: Path, broker_port: int) -> str:
    devices = "".join(
        f'\n[[bus.device]]\naddress = {n.address}\nclass = "{n.cls}"\nid = "{n.key}"\n'
        f"location = {json.dumps(n.name)}\n" for n in gw.nodes)
    return (f'[gateway]\nid = "{gw.key}"\nsite = {json.dumps(gw.site)}\n'
            f'storage = "{storage}"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\ntls = false\n\n'
            f'[[bus]]\nname = "rs485-1"\ntype = "rtu"\nport = "{port}"\ntimeout_s = 0.3\n'
            + devices)


def _one_time_password(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("one-time password:"):
            return line.split(":", 1)[1].strip()
    raise StackError("edgefleet fleet create-admin printed no one-time password")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("pid %d ignored SIGTERM for %.0f s: killed", proc.pid, STOP_TIMEOUT_S)
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------- the command
@contextlib.contextmanager
def _state_dir(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_stack_demo(*, state: str | None = None, port: int = 8080, duration: float | None = None,
                   baud: int = 19200) -> int:
    console = Console(highlight=False)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    # Every process the demo starts joins its lifeline: a SIGKILLed demo leaves no orphan.
    lifeline.start(grace_s=STOP_TIMEOUT_S / 3)
    try:
        return _run(console, stop, state, port, duration, baud)
    finally:
        lifeline.stop()


def _run(console: Console, stop: threading.Event, state: str | None, port: int,
         duration: float | None, baud: int) -> int:
    with _state_dir(state) as workdir:
        def tell(event: Event) -> None:
            console.print(f"[bold cyan]scenario[/] {event.note or event.describe()}")
            sys.stdout.flush()  # a pipe (CI, a log) sees the day as it happens

        stack = Stack(workdir, port=port, on_event=tell)
        try:
            _start(stack, console, baud)
            scenario = stack.play()
            _banner(stack, console, scenario)
            deadline = None if duration is None else time.monotonic() + duration
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.2)
        except KeyboardInterrupt:
            console.print("\nstopping ...")
        except StackError as exc:
            console.print(f"[bold red]edgefleet demo:[/] {exc}")
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan
            stack.stop()
            signal.signal(signal.SIGINT, signal.default_int_handler)
        console.print("stopped: every process of the demo has exited")
    return 0


def _start(stack: Stack, console: Console, baud: int) -> None:
    steps: list[tuple[str, Callable[[], None]]] = [
        ("Mosquitto (loss-proof config)", stack.start_broker),
        ("fleet manager (SQLite, telemetry store, ingest)", stack.start_fleet),
        ("registry: Ho Chi Minh City, wards, sites, devices, users", stack.seed),
        ("two RS-485 buses of real-firmware nodes", lambda: stack.start_buses(baud)),
        ("two gateways", stack.start_gateways),
    ]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(steps) + 1)
        for text, step in steps:
            progress.update(task, description=text)
            step()
            progress.advance(task)

        def devices(up: int, total: int) -> None:
            progress.update(task, description=f"devices online in the fleet: {up}/{total}")
        stack.wait_online(devices)
        progress.advance(task)


def _banner(stack: Stack, console: Console, scenario: Scenario) -> None:
    console.print(f"\n[bold]edgefleet demo: {scenario.title}[/]")
    console.print(f"dashboard: {stack.url}/ui/")
    console.print(f"admin login: admin  one-time password: {stack.admin_password}")
    console.print("  (shown once; the dashboard asks you to set your own at first sign-in)")
    for username, password in stack.user_passwords.items():
        role = next(r for u, r, _ in stack.users if u == username)
        console.print(f"  also: {username} ({role})  one-time password: {password}")
    console.print(f"state and logs: {stack.state}")
    console.print(f"the day plays over {scenario.duration:.0f} s; Ctrl-C stops everything\n")
    sys.stdout.flush()
