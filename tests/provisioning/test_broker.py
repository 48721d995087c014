"""The generated Mosquitto configuration against a real Mosquitto (Debian 2.0): mutual TLS,
identity from the certificate, per-identity ACLs, the CRL, and queues that drop nothing.

Every client here is a plain paho MQTT 5 client with its own certificate from the fleet CA
(provisioning.ca), so what is proven is the broker's behaviour under the generated files.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from provisioning.broker import BrokerSettings, render_acl, render_config, write_config
from provisioning.ca import CAError, FleetCA

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
NOT_AUTHORIZED = 135
#: Certificates the CA would never issue (check_identity refuses them), signed anyway.
CRAFTED = ("gw+", "gw#", "gw-a/x", "gw-a/cmd", "+", "#")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    ca: FleetCA
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    certs: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.workdir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
                                   f"\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


def craft(ca: FleetCA, cn: str, folder: Path) -> tuple[Path, Path]:
    """A client certificate for a name the CA tool refuses, signed with the CA's key directly
    (a mistake, another tool, a stolen key used carelessly): not in the CA's index."""
    folder.mkdir(exist_ok=True)
    ca_key = serialization.load_pem_private_key((ca.dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    stem = folder / str(abs(hash(cn)))
    cert_path, key_path = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    ca = FleetCA.init(root / "ca")
    s = Site(ca, free_port(), root / "broker")
    for gw in ("gw-a", "gw-b", "gw-old"):
        s.certs[gw] = ca.path(ca.issue(gw, "gateway"))
    s.certs["fleet"] = ca.path(ca.issue("fleet", "fleet"))
    for cn in CRAFTED:
        s.certs[cn] = craft(ca, cn, root / "crafted")
    server = ca.issue("broker", "server", hosts=("localhost", HOST))
    ca.revoke("gw-old")
    cert, key = ca.path(server)
    settings = BrokerSettings(ca_file=ca.ca_file, cert_file=cert, key_file=key,
                              crl_file=ca.crl_file, acl_file=s.workdir / "acl",
                              persistence_dir=s.workdir / "data", port=s.port, bind=HOST,
                              log_file=s.workdir / "mosquitto.log",
                              run_as_root=os.geteuid() == 0)
    # The ACL from the CA's index, exactly as `edgefleet ca broker-config` writes it.
    write_config(settings, s.workdir / "mosquitto.conf", ca.identities("gateway"),
                 ca.identities("fleet"))
    s.start()
    yield s
    s.stop()


class Client:
    """A paho MQTT 5 client with one identity's certificate; records what happens to it."""

    def __init__(self, site: Site, identity: str | None, client_id: str = "",
                 persistent: bool = False) -> None:
        self.site = site
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(site.ca.ca_file))
        if identity is not None:
            cert, key = site.certs[identity]
            ctx.load_cert_chain(str(cert), str(key))
        self.c.tls_set_context(ctx)
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.subscribed = threading.Event()
        self.acks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.persistent = persistent
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_a: self.ended.set()
        self.c.on_connect_fail = lambda *_a: self.ended.set()
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = lambda *_a: self.subscribed.set()
        self.c.on_message = self._on_message

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        if not getattr(rc, "is_failure", True):
            self.connected.set()
        else:
            self.ended.set()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        with self._cond:
            self.acks[mid] = int(getattr(rc, "value", 0))
            self._cond.notify_all()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload))
            self._cond.notify_all()

    def connect(self, timeout: float = 10.0) -> bool:
        """True once CONNACK says success; False when TLS or the broker refuse us."""
        props = None
        if self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        try:
            self.c.connect(HOST, self.site.port, keepalive=30, clean_start=not self.persistent,
                           properties=props)
        except (ssl.SSLError, OSError):
            return False
        self.c.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected.wait(0.05):
                return True
            if self.ended.is_set():
                return False
        return False

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish at QoS 1 and return the PUBACK reason code (0 success, 135 refused)."""
        info = self.c.publish(topic, payload, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self.acks, 10):
                raise AssertionError(f"no PUBACK for {topic}")
            return self.acks[info.mid]

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.clear()
        self.c.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(10), f"no SUBACK for {topic_filter}"

    def wait_messages(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def connect(site: Site, made: list[Client], identity: str | None, **kw: object) -> Client:
    c = Client(site, identity, **kw)  # type: ignore[arg-type]
    made.append(c)
    assert c.connect(), f"{identity} could not connect:\n{site.log()[-2000:]}"
    return c


def refused(site: Site, identity: str, topic: str) -> bool:
    """One QoS 1 publish on a fresh connection: True when PUBACK says 135 (not authorized).

    Mosquitto 2.0.11 closes the connection after such a PUBACK, hence a connection per try.
    """
    c = Client(site, identity)
    try:
        assert c.connect(), f"{identity} could not connect"
        code = c.publish(topic)
        assert code in (0, 16, NOT_AUTHORIZED), code  # 16: accepted, no subscriber
        return code == NOT_AUTHORIZED
    finally:
        c.close()


def _flush(sender: Client, watcher: Client, topic: str) -> None:
    """A marker the watcher must see: everything published before it has been routed."""
    assert sender.publish(topic, b"marker") == 0
    n = len(watcher.messages)
    got = watcher.wait_messages(n + 1)
    assert got[-1] == (topic, b"marker"), got[-3:]


# ---------------------------------------------------------------------------------- the rules
def test_a_gateway_publishes_its_own_telemetry_and_the_fleet_receives_it(
        site: Site, clients: list[Client]) -> None:
    fleet = connect(site, clients, "fleet")
    fleet.subscribe("edgefleet/#")
    gw = connect(site, clients, "gw-a")
    for topic in ("edgefleet/v1/gw-a/status", "edgefleet/v1/gw-a/d1/telemetry",
                  "edgefleet/v1/gw-a/d1/alarm", "edgefleet/v1/gw-a/ack"):
        assert gw.publish(topic) == 0, topic
    got = fleet.wait_messages(4)
    assert [t for t, _ in got] == ["edgefleet/v1/gw-a/status", "edgefleet/v1/gw-a/d1/telemetry",
                                   "edgefleet/v1/gw-a/d1/alarm", "edgefleet/v1/gw-a/ack"]


@pytest.mark.parametrize("topic", [
    "edgefleet/v1/gw-b/d1/telemetry",     # another gateway's device
    "edgefleet/v1/gw-b/status",           # another gateway's status (a fake "offline")
    "edgefleet/v1/gw-a/cmd/d1/siren",     # a command to itself: only the fleet commands
    "edgefleet/v1/gw-b/cmd/d1/siren",     # a command to another gateway
    "edgefleet/v1/gw-a/d1/whatever",      # not a channel of the contract
    "other/topic",
])
def test_a_gateway_is_refused_outside_its_own_topics(site: Site, topic: str) -> None:
    assert refused(site, "gw-a", topic)
    assert not refused(site, "gw-a", "edgefleet/v1/gw-a/d1/telemetry")  # its own: accepted


def test_a_gateway_reads_its_own_commands_and_nobody_elses(
        site: Site, clients: list[Client]) -> None:
    gw = connect(site, clients, "gw-a")
    gw.subscribe("edgefleet/#")           # asks for everything; the ACL filters delivery
    fleet = connect(site, clients, "fleet")
    assert fleet.publish("edgefleet/v1/gw-b/cmd/d1/siren", b"b") == 0
    assert connect(site, clients, "gw-b").publish("edgefleet/v1/gw-b/d1/telemetry") == 0
    assert fleet.publish("edgefleet/v1/gw-a/cmd/d1/siren", b"a") == 0
    # The foreign messages were routed before this one (each publish waited for its PUBACK),
    # so had gw-a been allowed to read them they would have arrived first.
    got = gw.wait_messages(1)
    assert got == [("edgefleet/v1/gw-a/cmd/d1/siren", b"a")], got


def test_a_revoked_gateway_certificate_cannot_connect(site: Site) -> None:
    c = Client(site, "gw-old")
    try:
        assert not c.connect()
    finally:
        c.close()


def test_a_client_without_a_certificate_cannot_connect(site: Site) -> None:
    c = Client(site, None)
    try:
        assert not c.connect()
    finally:
        c.close()


@pytest.mark.parametrize("cn", CRAFTED)
def test_a_certificate_whose_name_holds_a_wildcard_or_slash_gets_nothing(
        site: Site, clients: list[Client], cn: str) -> None:
    # The CA signed it, so TLS lets it in, but no topic accepts its publishes: its "own"
    # prefix, the gateway its name mimics and that gateway's commands, another gateway.
    for topic in (f"edgefleet/v1/{cn}/status".replace("+", "p").replace("#", "h"),
                  "edgefleet/v1/gw-a/x/telemetry", "edgefleet/v1/gw-a/x/event",
                  "edgefleet/v1/gw-a/status", "edgefleet/v1/gw-a/cmd/d1/siren",
                  "edgefleet/v1/gw-b/d1/telemetry"):
        assert refused(site, cn, topic), (cn, topic)
    rogue = connect(site, clients, cn)
    # and it reads nothing: gw-a's data and commands flow past it unseen
    rogue.subscribe("edgefleet/#")
    fleet = connect(site, clients, "fleet")
    fleet.subscribe("edgefleet/v1/gw-a/#")
    gw = connect(site, clients, "gw-a")
    assert gw.publish("edgefleet/v1/gw-a/x/telemetry") == 0
    assert fleet.publish("edgefleet/v1/gw-a/cmd/x/siren") == 0
    _flush(gw, fleet, "edgefleet/v1/gw-a/status")
    assert rogue.messages == []


def test_a_persistent_consumer_far_behind_loses_nothing(
        site: Site, clients: list[Client]) -> None:
    """Mosquitto's default (1000 queued) would drop 2000 of these 3000 QoS 1 messages."""
    ingest = Client(site, "fleet", client_id="ingest-behind", persistent=True)
    ingest.c.max_inflight_messages_set(100)
    assert ingest.connect()
    ingest.subscribe("edgefleet/v1/gw-b/#")
    ingest.close()                        # away; the broker queues for its session
    gw = Client(site, "gw-b")
    clients.append(gw)
    gw.c.max_inflight_messages_set(100)
    assert gw.connect()
    n = 3000
    infos = [gw.c.publish("edgefleet/v1/gw-b/d1/telemetry", str(i).encode(), qos=1)
             for i in range(n)]
    for info in infos:
        info.wait_for_publish(30)
    back = Client(site, "fleet", client_id="ingest-behind", persistent=True)
    clients.append(back)
    back.c.max_inflight_messages_set(100)
    assert back.connect()
    got = back.wait_messages(n, timeout=60)
    assert [int(p) for _, p in got] == list(range(n))
    assert "dropped" not in site.log()


# ---------------------------------------------------------------------------------- rendering
def test_the_listener_requires_a_certificate_names_the_user_after_it_and_checks_the_crl(
        tmp_path: Path) -> None:
    s = BrokerSettings(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "s.pem",
                       key_file=tmp_path / "s.key", crl_file=tmp_path / "crl.pem",
                       acl_file=tmp_path / "acl", persistence_dir=tmp_path / "data")
    lines = render_config(s).splitlines()
    for needed in ("require_certificate true", "use_identity_as_username true",
                   f"crlfile {tmp_path / 'crl.pem'}", "allow_anonymous false",
                   "persistence true", "max_queued_messages 0", "listener 8883 0.0.0.0"):
        assert needed in lines, needed
    assert "user root" not in lines


def test_the_acl_refuses_to_list_a_name_that_is_not_one_topic_level() -> None:
    with pytest.raises(CAError):
        render_acl(["gw-a", "gw-a/x"], ["fleet"])
    assert "pattern" not in render_acl(["gw-a"], ["fleet"])
