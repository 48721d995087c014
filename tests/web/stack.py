"""The real fleet the browser tests and the screenshot command look at: a Mosquitto broker, the
fleet app under uvicorn on a free loopback port (SQLite, the embedded telemetry store) with its
MQTT ingest, a seeded registry (a city without an outline, three wards with the demo's
outlines, sites with positions, two gateways, devices of all four classes) and users of each
role that matters. Alarms, state and telemetry reach the fleet the way a gateway sends them:
contract payloads published to the broker.

``FleetStack(workdir).start()`` then ``.stop()``; nothing here is a mock.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion

from contracts.mqtt import device_topic, status_topic
from edgefleet.stack import WARD_OUTLINES
from fleet.app import create_app
from fleet.auth.rbac import Principal
from fleet.auth.service import create_user
from fleet.core.db import Database
from fleet.core.migrate import upgrade
from fleet.core.settings import Settings
from fleet.ingest.settings import IngestSettings
from fleet.ota.settings import OtaSettings
from fleet.registry import service as registry
from tests.appserver import serve
from tests.gateway.mosquitto import Broker

__all__ = ["PASSWORDS", "FleetStack"]

#: Test accounts (never a default account in the product: these exist only in the test DB).
PASSWORDS = {"admin": "admin-Pa55-word-for-tests", "pccc": "fire-Pa55-word-for-tests",
             "capnuoc": "water-Pa55-word-for-tests", "xem": "view-Pa55-word-for-tests"}

SITES = [  # ward, site name, latitude, longitude
    ("Phường Bến Thành", "Chợ Bến Thành", 10.7725, 106.6980),
    ("Phường Bến Thành", "Trường THCS Văn Lang", 10.7698, 106.6935),
    ("Phường Sài Gòn", "Nhà hát Thành phố", 10.7766, 106.7031),
    ("Phường Sài Gòn", "Bến Bạch Đằng", 10.7744, 106.7067),
    ("Phường Cầu Ông Lãnh", "Trạm bơm Calmette", 10.7672, 106.6989),
]
# key, class, name, site index, gateway
DEVICES = [
    ("fire-1", "fire", "Đầu báo khói tầng 2", 0, "gw-bt"),
    ("fire-2", "fire", "Đầu báo khói kho", 0, "gw-bt"),
    ("fire-3", "fire", "Đầu báo nhiệt bếp", 1, "gw-bt"),
    ("water-1", "water", "Chất lượng nước Bến Thành", 0, "gw-bt"),
    ("air-1", "air", "Quan trắc không khí Văn Lang", 1, "gw-bt"),
    ("fire-4", "fire", "Đầu báo khói sân khấu", 2, "gw-sg"),
    ("flood-1", "flood", "Mực nước Bạch Đằng", 3, "gw-sg"),
    ("air-2", "air", "Quan trắc không khí Nhà hát", 2, "gw-sg"),
    ("flood-2", "flood", "Mực nước Calmette", 4, "gw-sg"),
    ("water-2", "water", "Áp lực nước Calmette", 4, "gw-sg"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ts(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FleetStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker = Broker(workdir / "mosquitto")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.epoch = uuid.uuid4().hex[:16]
        self._seq: dict[str, int] = defaultdict(int)
        self.device_ids: dict[str, int] = {}
        self.area_ids: dict[str, int] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._pub: paho.Client | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.broker.start()
        data = self.workdir / "fleet-data"
        from tests.fleet.ota_releases import ReleaseKit

        self.releases = ReleaseKit(self.workdir / "releases")  # signing keys and fleet trust
        self.settings = Settings(
            data_dir=data, secret_key=secrets.token_urlsafe(48), argon2_time_cost=1,
            argon2_memory_kib=1024, escalation_poll_s=1.0,
            ingest=IngestSettings(host=self.broker.host, port=self.broker.port,
                                  client_id=f"fleet-web-{self.epoch}", batch_wait_s=0.02),
            ota=OtaSettings(release_trust=self.releases.trust, bundle_base_url=self.url,
                            poll_s=1.0))
        data.mkdir(parents=True, exist_ok=True)
        upgrade(self.settings.database_url)
        self.db = Database.from_url(self.settings.database_url)
        self._seed()
        self.start_app()
        self._pub = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                client_id=f"test-gateway-{self.epoch}",
                                protocol=paho.MQTTv5)
        self._pub.connect(self.broker.host, self.broker.port)
        self._pub.loop_start()
        self._wait_ingesting()

    def start_app(self) -> None:
        """Serve a new fleet app on the stack's port; it starts its own ingest (the [ingest]
        section names the broker), which resumes the broker session a stopped one left."""
        app = create_app(self.settings, database=self.db)
        self._server, self._thread = serve(app, self.port)

    def stop_app(self) -> None:
        """Stop the fleet app (API, event streams and ingest) as a restart would; the broker,
        the database and the test gateway's connection stay."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            if self._thread.is_alive():
                raise RuntimeError("the fleet app did not stop")
        self._server = self._thread = None

    def _wait_ingesting(self, timeout: float = 15.0) -> None:
        """Until ingest's subscription is in place, a telemetry message would be lost: send the
        first one until the fleet has accounted for it (a copy that arrives late is counted as a
        duplicate, never stored twice)."""
        probe = self._numbered("fire-1", datetime.now(UTC) - timedelta(minutes=61))
        body = {**probe, "class": "fire", "values": {"smoke": 0.3, "temperature": 24.0}}
        deadline = time.monotonic() + timeout
        token = self.token("admin")
        while time.monotonic() < deadline:
            self.publish(device_topic("gw-bt", "fire-1", "telemetry"), body)
            for _ in range(10):
                r = httpx.get(f"{self.url}/api/v1/dashboard/health",
                              headers={"Authorization": f"Bearer {token}"})
                if any(row["device"] == "fire-1" for row in r.json()["accounting"]):
                    return
                time.sleep(0.1)
        raise RuntimeError("the fleet's ingest never received a message from the broker")

    def stop(self) -> None:
        if self._pub is not None:
            self._pub.loop_stop()
            self._pub.disconnect()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.db.dispose()
        self.broker.stop()

    # -- registry and accounts ------------------------------------------------------------------
    def _seed(self) -> None:
        admin = Principal(user_id=0, username="seed", role="admin", area_path=None)
        with self.db.transaction() as session:
            city = registry.create_area(session, name="Thành phố Hồ Chí Minh", kind="city",
                                        actor="test:seed")
            self.area_ids["city"] = city.id
            sites = []
            for ward, name, lat, lon in SITES:
                if ward not in self.area_ids:
                    self.area_ids[ward] = registry.create_area(
                        session, name=ward, kind="ward", parent_id=city.id,
                        outline=WARD_OUTLINES[ward], actor="test:seed").id
                sites.append(registry.create_site(session, admin, name=name,
                                                  area_id=self.area_ids[ward],
                                                  latitude=lat, longitude=lon))
            gateways = {
                "gw-bt": registry.create_gateway(session, admin, key="gw-bt",
                                                 name="Gateway Bến Thành", site_id=sites[0].id),
                "gw-sg": registry.create_gateway(session, admin, key="gw-sg",
                                                 name="Gateway Sài Gòn", site_id=sites[2].id),
            }
            for address, (key, cls, name, site, gw) in enumerate(DEVICES, start=1):
                dev = registry.create_device(session, admin, gateway_id=gateways[gw].id,
                                             key=key, device_class=cls, name=name,
                                             address=address, site_id=sites[site].id)
                self.device_ids[key] = dev.id
            create_user(session, self.settings, username="admin",
                        password=PASSWORDS["admin"], role="admin")
            create_user(session, self.settings, username="pccc", password=PASSWORDS["pccc"],
                        role="fire-safety", area_id=city.id)
            create_user(session, self.settings, username="capnuoc",
                        password=PASSWORDS["capnuoc"], role="utility",
                        area_id=self.area_ids["Phường Bến Thành"])
            create_user(session, self.settings, username="xem", password=PASSWORDS["xem"],
                        role="viewer", area_id=self.area_ids["Phường Sài Gòn"])

    # -- what a gateway sends -------------------------------------------------------------------
    def publish(self, topic: str, body: dict[str, Any], *, retain: bool = False) -> None:
        assert self._pub is not None
        info = self._pub.publish(topic, json.dumps(body), qos=1, retain=retain)
        info.wait_for_publish(5)

    def _numbered(self, device: str, at: datetime | None = None) -> dict[str, Any]:
        self._seq[device] += 1
        return {"v": 1, "device": device, "ts": _ts(at), "epoch": self.epoch,
                "seq": self._seq[device]}

    def gateway_status(self, gateway: str, *, backlog: int = 0, dropped: int = 0) -> None:
        """The gateway's retained status, its health shaped as gateway/service.py reports it."""
        devices = {key: {"online": True, "polls": 1200 + 37 * i, "timeouts": i % 3,
                         "exceptions": 0, "failures_in_a_row": 0}
                   for i, (key, _c, _n, _s, gw) in enumerate(DEVICES) if gw == gateway}
        self.publish(status_topic(gateway), {
            "v": 1, "gateway": gateway, "online": True, "ts": _ts(),
            "health": {"outbox": {"depth": backlog, "bytes": backlog * 120,
                                  "oldest_age_s": 2.5 if backlog else 0.0,
                                  "dropped_telemetry": dropped, "dead_letters": 0},
                       "buses": {"rs485-1": {"transactions": 9000, "failures": 4,
                                             "devices": devices}}}},
            retain=True)

    def state(self, gateway: str, device: str, cls: str, *, online: bool = True,
              firmware: str = "1.4.2", faults: list[str] | None = None,
              status: list[str] | None = None) -> None:
        self.publish(device_topic(gateway, device, "state"), {
            **self._numbered(device), "class": cls, "online": online, "firmware": firmware,
            "faults": faults or [], "status": status or []}, retain=True)

    def telemetry(self, gateway: str, device: str, cls: str, values: dict[str, float],
                  at: datetime | None = None) -> None:
        self.publish(device_topic(gateway, device, "telemetry"),
                     {**self._numbered(device, at), "class": cls, "values": values})

    def skip(self, device: str, n: int) -> None:
        """Lose ``n`` seqs of ``device`` without declaring them: the fleet must count a gap."""
        self._seq[device] += n

    def drops(self, gateway: str, device: str, n: int) -> None:
        first = self._seq[device] + 1
        self._seq[device] += n
        self.publish(device_topic(gateway, device, "drops"), {
            "v": 1, "device": device, "epoch": self.epoch,
            "ranges": [[first, self._seq[device]]], "reason": "disk-full"})

    def alarm(self, gateway: str, device: str, cls: str, alarm_type: str, *,
              severity: str = "critical", state: str = "raised", location: str = "") -> str:
        alarm_id = f"{device}-{alarm_type}-{self.epoch}"
        self.publish(device_topic(gateway, device, "alarm"), {
            **self._numbered(device), "class": cls, "alarm_id": alarm_id, "type": alarm_type,
            "state": state, "severity": severity, "location": location})
        return alarm_id

    # -- the fleet's API, as a client -----------------------------------------------------------
    def token(self, username: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/login",
                       json={"username": username, "password": PASSWORDS[username]})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def get(self, username: str, path: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1{path}",
                      headers={"Authorization": f"Bearer {self.token(username)}"})
        r.raise_for_status()
        return r.json()

    def wait_for(self, username: str, path: str, check: Any, timeout: float = 10.0) -> Any:
        token = self.token(username)
        deadline = time.monotonic() + timeout
        while True:
            r = httpx.get(f"{self.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 200 and check(r.json()):
                return r.json()
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never satisfied the check: {r.text[:500]}")
            time.sleep(0.1)

    def campaign(self, name: str, version: tuple[int, int, int], device_class: str = "fire",
                 **body: Any) -> dict[str, Any]:
        """Upload a signed release and start a campaign for it, through the API as an admin."""
        headers = {"Authorization": f"Bearer {self.token('admin')}"}
        bundle = self.releases.bundle(version, device_class=device_class)
        r = httpx.post(f"{self.url}/api/v1/releases", content=bundle,
                       headers={**headers, "Content-Type": "application/x-tar"})
        r.raise_for_status()
        r = httpx.post(f"{self.url}/api/v1/campaigns", headers=headers,
                       json={"name": name, "release_id": r.json()["id"], **body})
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def ota_event(self, gateway: str, device: str, campaign: int, release: str, phase: str,
                  **extra: Any) -> None:
        """A gateway's OTA progress report for one device (contracts.mqtt.OtaEvent)."""
        self.publish(device_topic(gateway, device, "event"), {
            **self._numbered(device), "event": "ota", "campaign": str(campaign),
            "release": release, "phase": phase, **extra})

    # -- a believable morning, for the pages to show something ----------------------------------
    def populate(self) -> None:
        """Gateways online with some backlog, every device's state, an hour of telemetry for a
        few devices, one device silent, one with declared drops and one with a gap."""
        self.gateway_status("gw-bt", backlog=3)
        self.gateway_status("gw-sg", backlog=140, dropped=12)
        for key, cls, _name, _site, gw in DEVICES:
            if key == "air-2":
                self.state(gw, key, cls, online=False, firmware="1.3.9")
            elif key == "water-2":
                self.state(gw, key, cls, faults=["pressure_loop"], status=["fault"])
            else:
                self.state(gw, key, cls, firmware="1.4.2" if cls != "flood" else "1.4.1")
        now = datetime.now(UTC)
        for i in range(60):
            at = now - timedelta(minutes=59 - i)
            smoke = 0.4 + 0.02 * i + (1.5 if i > 50 else 0.0)
            self.telemetry("gw-bt", "fire-1", "fire",
                           {"smoke": round(smoke, 2), "temperature": 24.0 + i * 0.05,
                            "heat_rise_rate": 0.5}, at)
            self.telemetry("gw-sg", "flood-1", "flood",
                           {"level": 0.4 + 0.012 * i, "level_rate": 6.0 + i * 0.1}, at)
            if i == 30:
                self.drops("gw-sg", "flood-1", 5)
                self.skip("fire-1", 2)
        self.settled()

    def settled(self, timeout: float = 20.0) -> None:
        """Wait until the fleet has accounted for the last seq published for every device."""
        def done(health: dict[str, Any]) -> bool:
            produced = {r["device"]: r["produced"] for r in health["accounting"]}
            return all(produced.get(dev) == seq for dev, seq in self._seq.items())
        self.wait_for("admin", "/dashboard/health", done, timeout)
