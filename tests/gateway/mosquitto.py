"""A real Mosquitto broker for tests: own config in a temp dir, a free loopback port, restartable
on the same port (outage tests), with an optional mutual-TLS listener and per-gateway ACLs.

Also a throwaway PKI (cryptography) and a plain paho subscriber that collects messages in a
background thread, so assertions never depend on the gateway's own aiomqtt code path.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

#: The fleet's identity in the TLS fixture: may read every gateway's topics and write commands.
FLEET_IDENTITY = "fleet"

ACL = f"""\
# Each gateway writes only under its own prefix and reads only its own commands.
pattern write edgefleet/v1/%u/#
pattern read edgefleet/v1/%u/cmd/#

user {FLEET_IDENTITY}
topic read edgefleet/#
topic write edgefleet/v1/+/cmd/#
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, ClientCert]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(directory: Path, identities: Iterable[str]) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and one client cert per CN."""
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("edgefleet test CA")).issuer_name(_name("edgefleet test CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(validity[0]).not_valid_after(validity[1])
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(cn: str, stem: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(validity[0]).not_valid_after(validity[1])
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path

    server_cert, server_key = issue("localhost", "server", server=True)
    clients = {cn: ClientCert(*issue(cn, f"client-{cn}", server=False)) for cn in identities}
    return Pki(ca_path, server_cert, server_key, clients)


# ---------------------------------------------------------------------------------------------
# Broker


class Broker:
    """One mosquitto process. `stop()` and `start()` again keep the port, config and log."""

    def __init__(self, workdir: Path, *, pki: Pki | None = None, port: int | None = None,
                 extra_config: str = "", persistence: bool = False) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.pki = pki
        self.persistence = persistence
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.config.write_text(self._render(extra_config))

    def _render(self, extra: str) -> str:
        lines = []
        if os.geteuid() == 0:
            lines.append("user root")  # or it drops privileges and cannot write into tmp
        lines += [
            # Persistence keeps sessions and their queued messages across stop()/start(), as a
            # production broker does: the outage tests' subscriber must not miss what arrives
            # while it is still reconnecting.
            *(["persistence true", f"persistence_location {self.workdir}/",
               "autosave_interval 0"] if self.persistence else ["persistence false"]),
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Subscribers in tests and benchmarks may fall behind by 200k messages: queue them
            # rather than let the broker drop QoS 1 messages and fake a "gap".
            "max_queued_messages 0",
            "max_queued_bytes 0",
            f"listener {self.port} {self.host}",
        ]
        if self.pki is None:
            lines.append("allow_anonymous true")
        else:
            acl = self.workdir / "acl"
            acl.write_text(ACL)
            lines += [
                f"cafile {self.pki.ca}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
                f"acl_file {acl}",
            ]
        return "\n".join(lines) + "\n" + extra

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The running mosquitto's pid (to SIGSTOP it: a broker that hangs)."""
        assert self._proc is not None
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr \
                    else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {err}"
                                   f"{self.log_text()}")
            try:  # readiness: the listener accepts a connection
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): clients see their connection closed."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # paho client settings for a test client of this broker (TLS identity when needed)
    def configure(self, client: paho.Client, identity: str | None = None) -> None:
        if self.pki is None:
            return
        ident = identity or FLEET_IDENTITY
        cert = self.pki.clients[ident]
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
        client.tls_set_context(ctx)


# ---------------------------------------------------------------------------------------------
# Subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Subscriber:
    """A paho (not aiomqtt) client in its own thread, collecting what matches `topic_filter`."""

    def __init__(self, broker: Broker, topic_filter: str, *, qos: int = 1,
                 identity: str | None = None, client_id: str = "",
                 persistent: bool = False) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._qos = qos
        self._persistent = persistent
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(0)
        broker.configure(self.client, identity)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.5)

    def _on_connect(self, client: paho.Client, _u: object, _f: object, rc: object,
                    _p: object = None) -> None:
        client.subscribe(self.topic_filter, self._qos)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def __enter__(self) -> Subscriber:
        props = None
        if self._persistent:  # the broker keeps our subscription and queue across its restarts
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(self.broker.host, self.broker.port, keepalive=30,
                            clean_start=not self._persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"subscriber on {self.topic_filter} never got its SUBACK")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def pause(self) -> None:
        """Disconnect cleanly; a persistent session keeps queueing at the broker meanwhile."""
        self.client.disconnect()
        self.client.loop_stop()
        self._subscribed.clear()

    def resume(self, timeout: float = 10.0) -> None:
        self.client.reconnect()
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber on {self.topic_filter} never got its SUBACK")

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0,
                 what: str = "messages") -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = self.messages[-3:]
                    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                                         f"have {len(self.messages)}, last {tail!r}")
                self._cond.wait(left)
            return list(self.messages)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[Received]:
        return self.wait_for(lambda m: len(m) >= n, timeout, f"{n} messages")


def publish_once(broker: Broker, topic: str, payload: bytes, *, qos: int = 1,
                 identity: str | None = None, retain: bool = False) -> None:
    """Publish one message as the fleet would (a command, say) and wait for the PUBACK."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    broker.configure(client, identity)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
