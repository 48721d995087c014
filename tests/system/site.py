"""A whole site for system tests, every part real and in production roles: a Mosquitto broker;
the fleet manager (``create_app`` under uvicorn on a free loopback port, SQLite, its ingest, its
campaign timer, its release store holding the fleet's release trust); the site registered
through the fleet's API (area, site, gateway, devices); firmware nodes (the MicroPython unix
port) on simulated RS-485 buses paced at their baud rate; and the gateway process as it runs on
a Pi (``edgefleet gateway run``), bridging the buses to the broker and relaying OTA.

The release trust is one file, as a technician would deploy it: the fleet verifies uploads with
it, the gateway verifies bundles with it (``[ota] trust``) and every node carries it
(``data/trust.json``, as ``edgefleet flash`` writes it).

``FleetSite(workdir, buses).start()`` then ``.stop()``; nothing here is a mock.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from contracts.release import Version
from fleet.app import create_app
from fleet.auth.service import create_user
from fleet.core.db import Database
from fleet.core.migrate import upgrade
from fleet.core.settings import Settings
from fleet.ingest.settings import IngestSettings
from fleet.ota.settings import OtaSettings
from hardware import mpy
from hardware.mpy import FIRMWARE_APP
from hardware.sim.simbus import SimBus
from hardware.sim.simrun import PhysicsFeed, attach_physics
from provisioning import release as rel
from tests.appserver import serve
from tests.gateway.mosquitto import Broker, Subscriber, free_port
from tests.gateway.otafleet import BOARD, Keys, bundle, flash_trust, make_keys

__all__ = ["BAUD", "GATEWAY", "FleetSite", "Node", "compile_once", "dump", "signed_release",
           "versions_of"]

BAUD = 115200
ADMIN = ("admin", "admin-Pa55-word-for-system-tests")  # exists only in the test's database
GATEWAY = "gw-pump-station"
#: httpx's default 5 s is too short for an upload (the fleet verifies the bundle) or a page
#: on a CI machine running other tests beside this one.
HTTP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Node:
    bus: str
    address: int
    cls: str
    key: str


class FleetSite:
    """One fleet, one site with one gateway and its buses (``{bus name: [(address, class,
    device key), ...]}``), and a registry-only device of each class in another ward (a
    campaign targeting the site must leave it out).

    ``sites`` puts the devices of a bus at another site of the same ward, served by the same
    gateway (``{bus name: site name}``; the registry's ids are ``ids["site:<bus>"]``).
    ``node_trust``, set before ``start()``, gives a node (by device key) its own
    ``data/trust.json`` instead of the fleet's (a device flashed with another key set, or
    holding a higher anti-rollback floor). ``baud`` paces the buses (and the gateway's
    config); ``telemetry_ms`` sets the gateway's full read of every node (the trial clock
    advances on those reads)."""

    def __init__(self, workdir: Path, buses: dict[str, list[tuple[int, str, str]]], *,
                 confirm_trial_after_s: float = 2.0, sites: dict[str, str] | None = None,
                 baud: int = BAUD, telemetry_ms: int | None = None) -> None:
        self.workdir = workdir
        self.baud = baud
        self.telemetry_ms = telemetry_ms  # the nodes' full reads (the gateway's default: 5 s)
        self.nodes = [Node(bus, a, c, k) for bus, nodes in buses.items() for a, c, k in nodes]
        self.confirm_trial_after_s = confirm_trial_after_s
        self.sites = sites or {}
        self.node_trust: dict[str, dict[str, Any]] = {}
        self.feeds: dict[str, PhysicsFeed] = {}  # each bus's physics: light a fire with it
        self.broker = Broker(workdir / "mosquitto")
        self.keys: Keys = make_keys(workdir / "keys")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sims: dict[str, SimBus] = {}
        self.ids: dict[str, int] = {}  # registry ids: areas, site, gateway, devices by key
        self.gateway_log = workdir / "gateway.log"
        self.mqtt: Subscriber | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._gateway: subprocess.Popen[bytes] | None = None
        self._token = ""
        self.db: Database | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.broker.start()
        self._start_fleet()
        self._register()
        # Everything the gateway publishes and every command it is sent, seen by a plain paho
        # client beside it (not through the gateway's or the fleet's own MQTT code).
        self.mqtt = Subscriber(self.broker, f"edgefleet/v1/{GATEWAY}/#")
        self.mqtt.__enter__()
        for bus in dict.fromkeys(n.bus for n in self.nodes):
            on_bus = [n for n in self.nodes if n.bus == bus]
            sim = SimBus([(n.address, n.cls) for n in on_bus], baud=self.baud,
                         workdir=self.workdir / f"bus-{bus}",
                         node_options={n.address: {"board": BOARD} for n in on_bus})
            flash_trust(sim, self.keys)
            for n in on_bus:
                if n.key in self.node_trust:
                    (sim.node(n.address).root / "data" / "trust.json").write_text(
                        json.dumps(self.node_trust[n.key]) + "\n")
            self.feeds[bus] = attach_physics(sim)
            self.sims[bus] = sim
            sim.start()
        config = self.workdir / "gateway.toml"
        config.write_text(self._gateway_config())
        with open(self.gateway_log, "ab") as log:
            self._gateway = subprocess.Popen(
                [sys.executable, "-m", "edgefleet.cli", "-v", "gateway", "run", str(config)],
                stdout=subprocess.DEVNULL, stderr=log)

    def stop(self) -> None:
        if self._gateway is not None and self._gateway.poll() is None:
            self._gateway.send_signal(signal.SIGTERM)
            try:
                self._gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._gateway.kill()
                self._gateway.wait()
        for sim in self.sims.values():
            sim.stop()
        if self.mqtt is not None:
            self.mqtt.__exit__(None, None, None)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        if self.db is not None:
            self.db.dispose()
        self.broker.stop()

    def _start_fleet(self) -> None:
        data = self.workdir / "fleet-data"
        data.mkdir(parents=True)
        settings = Settings(
            data_dir=data, secret_key=SecretStr(secrets.token_urlsafe(48)), argon2_time_cost=1,
            argon2_memory_kib=1024,
            ingest=IngestSettings(host=self.broker.host, port=self.broker.port,
                                  client_id=f"fleet-{secrets.token_hex(4)}", batch_wait_s=0.02,
                                  command_poll_s=0.1),
            ota=OtaSettings(release_trust=self.keys.trust, bundle_base_url=self.url,
                            poll_s=0.25))
        upgrade(settings.database_url)
        self.db = Database.from_url(settings.database_url)
        with self.db.transaction() as session:
            create_user(session, settings, username=ADMIN[0], password=ADMIN[1], role="admin")
        app = create_app(settings, database=self.db)
        self._server, self._thread = serve(app, self.port)
        r = httpx.post(f"{self.url}/api/v1/auth/login",
                       json={"username": ADMIN[0], "password": ADMIN[1]}, timeout=HTTP_TIMEOUT)
        r.raise_for_status()
        self._token = str(r.json()["access_token"])

    def _register(self) -> None:
        """The registry as an administrator enters it, through the API."""
        city = self.post("/areas", {"name": "Thành phố Hồ Chí Minh", "kind": "city"})["id"]
        ward = self.post("/areas", {"name": "Phường Cầu Ông Lãnh", "kind": "ward",
                                    "parent_id": city})["id"]
        other = self.post("/areas", {"name": "Phường Bến Thành", "kind": "ward",
                                     "parent_id": city})["id"]
        site = self.post("/sites", {"name": "Trạm bơm Calmette", "area_id": ward})["id"]
        far = self.post("/sites", {"name": "Chợ Bến Thành", "area_id": other})["id"]
        gw = self.post("/gateways", {"key": GATEWAY, "name": "Gateway Calmette",
                                     "site_id": site})["id"]
        far_gw = self.post("/gateways", {"key": "gw-ben-thanh", "site_id": far})["id"]
        self.ids.update(city=city, ward=ward, other_ward=other, site=site, gateway=gw)
        for bus, name in self.sites.items():
            self.ids[f"site:{bus}"] = self.post("/sites", {"name": name, "area_id": ward})["id"]
        for n in self.nodes:
            self.ids[n.key] = self.post("/devices", {
                "gateway_id": gw, "key": n.key, "device_class": n.cls, "address": n.address,
                "site_id": self.ids.get(f"site:{n.bus}", site)})["id"]
        for cls in dict.fromkeys(n.cls for n in self.nodes):
            self.ids[f"far-{cls}"] = self.post("/devices", {
                "gateway_id": far_gw, "key": f"{cls}-ben-thanh", "device_class": cls,
                "site_id": far})["id"]

    def _gateway_config(self) -> str:
        buses = []
        for name, sim in self.sims.items():
            poll = "" if self.telemetry_ms is None else \
                f"[bus.device.poll]\ntelemetry_ms = {self.telemetry_ms}\n"
            devices = "".join(f'\n[[bus.device]]\naddress = {n.address}\nclass = "{n.cls}"\n'
                              f'id = "{n.key}"\n{poll}' for n in self.nodes if n.bus == name)
            buses.append(f'[[bus]]\nname = "{name}"\ntype = "rtu"\nport = "{sim.master_path}"'
                         f'\nbaudrate = {self.baud}\ntimeout_s = 0.3\n{devices}')
        return f"""
[gateway]
id = "{GATEWAY}"
storage = "{self.workdir / 'gateway-state'}"
confirm_trial_after_s = {self.confirm_trial_after_s}

[mqtt]
host = "{self.broker.host}"
port = {self.broker.port}
tls = false

[ota]
trust = "{self.keys.trust}"
offer_jitter_s = 0.5
progress_interval_s = 2

""" + "\n".join(buses)

    # -- the fleet's API, as an administrator ---------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def post(self, path: str, body: dict[str, Any]) -> Any:
        r = httpx.post(f"{self.url}/api/v1{path}", json=body, headers=self._headers(),
                       timeout=HTTP_TIMEOUT)
        if r.status_code >= 400:
            raise AssertionError(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def get(self, path: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1{path}", headers=self._headers(), timeout=HTTP_TIMEOUT)
        r.raise_for_status()
        return r.json()

    def upload(self, release: Path) -> dict[str, Any]:
        """A signed release directory, uploaded as the tar the fleet takes."""
        r = httpx.post(f"{self.url}/api/v1/releases", content=bundle(release),
                       headers={**self._headers(), "Content-Type": "application/x-tar"},
                       timeout=HTTP_TIMEOUT)
        if r.status_code != 201:
            raise AssertionError(f"release upload: {r.status_code} {r.text[:500]}")
        return r.json()  # type: ignore[no-any-return]

    def firmware(self) -> dict[str, str | None]:
        """What the registry says each of the gateway's devices runs (from the gateway's reads
        of its identity registers, through MQTT and ingest)."""
        page = self.get(f"/devices?gateway={GATEWAY}&limit=1000")
        return {d["key"]: d["firmware"] for d in page["items"]}

    def slots(self, key: str) -> dict[str, Any]:
        """The node's own slot record (``/slots.json`` in its flash, firmware/record.py's
        format: a CRC-32 line, then JSON): which slot it boots, on trial or not, rolled back."""
        node = next(n for n in self.nodes if n.key == key)
        data = (self.sims[node.bus].node(node.address).root / "slots.json").read_bytes()
        crc, _, body = data.partition(b"\n")
        assert crc == b"%08x" % zlib.crc32(body), f"{key}: slot record damaged"
        record: dict[str, Any] = json.loads(body)
        return record

    def trust(self, key: str) -> dict[str, Any]:
        """The node's own release trust (``data/trust.json``: key set and floor)."""
        node = next(n for n in self.nodes if n.key == key)
        data: dict[str, Any] = json.loads(
            (self.sims[node.bus].node(node.address).root / "data" / "trust.json").read_text())
        return data

    def gateway_jobs(self) -> dict[str, Any]:
        """The OTA deliveries the gateway holds, by device (its ``<storage>/ota-jobs.json``)."""
        path = self.workdir / "gateway-state" / "ota-jobs.json"
        jobs: dict[str, Any] = json.loads(path.read_text())["jobs"] if path.exists() else {}
        return jobs

    def ingest_rejects(self) -> dict[str, int]:
        """What the fleet's ingest refused, by gateway and reason (its Prometheus counters)."""
        r = httpx.get(f"{self.url}/metrics", headers=self._headers(), timeout=HTTP_TIMEOUT)
        r.raise_for_status()
        return {line.split("{", 1)[1].split("}", 1)[0]: int(float(line.rsplit(" ", 1)[1]))
                for line in r.text.splitlines()
                if line.startswith("edgefleet_ingest_rejects_total{")}

    def delivery_gaps(self) -> dict[str, int]:
        """Per device of the site, the seqs its gateway produced that the fleet never got."""
        return {n.key: sum(s["gaps"] for s in self.get(f"/devices/{self.ids[n.key]}/delivery")
                           ["streams"]) for n in self.nodes}

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float,
                 detail: Callable[[], str] | None = None) -> Any:
        """Poll the API through ``probe`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = probe()
            if last:
                return last
            if time.monotonic() > deadline:
                extra = detail() if detail is not None else ""
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: "
                                     f"{last!r}\n{extra}")
            time.sleep(0.2)

    def gateway_tail(self, chars: int = 4000) -> str:
        text = self.gateway_log.read_text(errors="replace") if self.gateway_log.exists() else ""
        return f"gateway log (tail):\n{text[-chars:]}"


def signed_release(out: Path, keys: Keys, source: Path, *, version: Version,
                   min_version: Version, device_class: str, compiled: bool = True) -> Path:
    """``edgefleet release build`` then ``sign``, with the fleet's key."""
    rel.build(out, version=version, min_version=min_version, device_class=device_class,
              board=BOARD, source=source, compiled=compiled)
    rel.sign(out, keys.private)
    return out


def compile_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on in this test, releases built from the same source reuse its first mpy-cross
    output (the same bytes mpy-cross would write again): one app released to several classes
    is compiled once, not once per class."""
    done: dict[Path, Path] = {}

    def compile_app(dest: Path, source: Path = FIRMWARE_APP) -> list[Path]:
        key = Path(source).resolve()
        if key not in done:
            files = mpy.compile_app(dest, source)
            done[key] = dest
            return files
        shutil.copytree(done[key] / "app", dest / "app")
        return sorted((dest / "app").rglob("*.mpy"))

    monkeypatch.setattr(rel, "compile_app", compile_app)


def versions_of(text: str) -> Version:
    major, minor, patch = (int(p) for p in text.split("."))
    return major, minor, patch


def dump(data: Any) -> str:
    return json.dumps(data, indent=1, default=str)[:3000]
