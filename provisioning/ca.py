"""The fleet certificate authority: one EC P-256 CA that signs every TLS identity of the fleet.

Owns the CA directory (on the provisioning laptop or an offline machine, never on a gateway):

    ca.pem, ca.key             the CA certificate and its key (0600)
    index.json                 every certificate ever issued: serial, identity, role, validity,
                               revocation time; the broker's ACL is generated from it
    crl.pem                    the certificate revocation list Mosquitto loads (``crlfile``)
    issued/<identity>/<serial>.pem, .key     one certificate and key (0600) per issue

An identity is the certificate's CN. Mosquitto uses it as the MQTT username
(``use_identity_as_username``) and the ACL puts it into topics, so it must be one topic level:
:func:`check_identity` refuses ``+``, ``#``, ``/``, NUL and anything that is not a short printable
name. Roles: ``gateway`` (publishes under its own ``edgefleet/v1/<id>/``), ``fleet`` (a fleet
service: reads all, writes commands) and ``server`` (the broker's own certificate).

Keys are created with mode 0600 from the first byte (``os.open`` with the mode, never chmod after
the write) and never logged: log lines name identities, serials and paths only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.durable import write_atomic, write_json_atomic
from contracts.mqtt import GATEWAY_CHANNELS

__all__ = [
    "CAError",
    "FleetCA",
    "Issued",
    "Role",
    "check_identity",
    "write_private",
]

log = logging.getLogger(__name__)

Role = Literal["gateway", "fleet", "server"]
ROLES: tuple[Role, ...] = ("gateway", "fleet", "server")

#: Characters an identity never holds: MQTT wildcards, the topic separator, NUL.
FORBIDDEN = frozenset("+#/\x00")
MAX_IDENTITY = 64  # the X.520 upper bound for a common name

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=825)
#: A CRL past its next-update time makes OpenSSL (so Mosquitto) refuse every client: renew it
#: (`edgefleet ca crl`) well before then; `edgefleet ca list` shows the date.
CRL_VALIDITY = dt.timedelta(days=365)
_BACKDATE = dt.timedelta(minutes=5)  # tolerate a gateway clock a little behind


class CAError(Exception):
    """A refused CA operation; the message says what and why (never any key material)."""


def check_identity(identity: str) -> str:
    """The identity if it is usable as a CN, MQTT username and one topic level; else CAError."""
    bad = sorted(FORBIDDEN & set(identity))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise CAError(f"identity {identity!r} holds {shown}: an identity is one MQTT topic level "
                      "and may not hold '+', '#', '/' or NUL")
    if not identity or len(identity) > MAX_IDENTITY:
        raise CAError(f"identity {identity!r} must be 1 to {MAX_IDENTITY} characters")
    if not identity.isprintable() or identity != identity.strip() or " " in identity:
        raise CAError(f"identity {identity!r} must be printable, without spaces")
    if identity in GATEWAY_CHANNELS:
        raise CAError(f"identity {identity!r} is the name of a topic channel")
    return identity


def write_private(path: Path, data: bytes) -> None:
    """Write secret bytes to a new file created 0600 (refuses to overwrite an existing one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Issued:
    """One row of index.json: a certificate the CA signed."""

    serial: int
    identity: str
    role: Role
    not_after: str
    cert: str                       # path relative to the CA directory
    key: str
    revoked_at: str | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None


class FleetCA:
    """A CA directory. :meth:`init` makes one; the constructor opens an existing one."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        if not (directory / "ca.pem").exists() or not (directory / "ca.key").exists():
            raise CAError(f"{directory} is not a CA directory (run `edgefleet ca init` first)")
        self.cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{directory / 'ca.key'} is not an EC key")
        self._key = key

    # -- paths ----------------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def crl_file(self) -> Path:
        return self.dir / "crl.pem"

    @property
    def index_file(self) -> Path:
        return self.dir / "index.json"

    # -- make a CA --------------------------------------------------------------------------------
    @classmethod
    def init(cls, directory: Path, name: str = "edgefleet fleet CA") -> FleetCA:
        """A new CA in an empty (or new) directory, with an empty index and CRL."""
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / "ca.key").exists():
            raise CAError(f"{directory} already holds a CA key; refusing to replace it")
        os.chmod(directory, 0o700)
        now = dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(_name(name)).issuer_name(_name(name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE).not_valid_after(now + CA_VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        write_private(directory / "ca.key", _pem_key(key))
        (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "index.json").write_text("[]\n")
        ca = cls(directory)
        ca.write_crl()
        log.info("made CA %r in %s", name, directory)
        return ca

    # -- index ----------------------------------------------------------------------------------
    def index(self) -> list[Issued]:
        rows = json.loads(self.index_file.read_text())
        return [Issued(**row) for row in rows]

    def _save_index(self, rows: list[Issued]) -> None:
        write_json_atomic(self.index_file, [asdict(r) for r in rows], mode=0o644, indent=1)

    def live(self, role: Role | None = None) -> list[Issued]:
        return [r for r in self.index() if r.live and (role is None or r.role == role)]

    def identities(self, role: Role) -> list[str]:
        """Identities with at least one live certificate of this role, sorted."""
        return sorted({r.identity for r in self.live(role)})

    # -- issue ----------------------------------------------------------------------------------
    def issue(self, identity: str, role: Role, *, hosts: tuple[str, ...] = (),
              validity: dt.timedelta = LEAF_VALIDITY) -> Issued:
        """Sign a new key for ``identity``; ``hosts`` (DNS names or IPs) only for a server."""
        check_identity(identity)
        if role not in ROLES:
            raise CAError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if role == "server" and not hosts:
            raise CAError("a server certificate needs at least one --host (DNS name or IP)")
        if role != "server" and hosts:
            raise CAError("only a server certificate carries hosts")
        other = {r.role for r in self.live() if r.identity == identity} - {role}
        if other:
            # One name, one role: a gateway called like a fleet service would get its rights.
            raise CAError(f"identity {identity!r} already has a live {other.pop()} certificate")
        key = ec.generate_private_key(ec.SECP256R1())
        return self._sign(identity, role, key, hosts=hosts, validity=validity)

    def _sign(self, cn: str, role: Role, key: ec.EllipticCurvePrivateKey, *,
              hosts: tuple[str, ...], validity: dt.timedelta) -> Issued:
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" \
            else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder()
                   .subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - _BACKDATE).not_valid_after(now + validity)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                                key_cert_sign=False, crl_sign=False,
                                                content_commitment=False,
                                                key_encipherment=False,
                                                data_encipherment=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self._key.public_key()), critical=False))
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        serial = cert.serial_number
        folder = self.dir / "issued" / _safe_dirname(cn)
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{serial:x}.pem", folder / f"{serial:x}.key"
        write_private(key_path, _pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        row = Issued(serial, cn, role, cert.not_valid_after_utc.isoformat(),
                     str(cert_path.relative_to(self.dir)), str(key_path.relative_to(self.dir)))
        self._save_index([*self.index(), row])
        log.info("issued %s certificate for %r, serial %x", role, cn, serial)
        return row

    # -- revoke ---------------------------------------------------------------------------------
    def revoke(self, identity: str) -> list[Issued]:
        """Revoke every live certificate of ``identity`` and rewrite the CRL; returns them."""
        rows = self.index()
        now = dt.datetime.now(dt.UTC).isoformat()
        hit = [r for r in rows if r.identity == identity and r.live]
        if not hit:
            raise CAError(f"no live certificate for {identity!r}")
        rows = [Issued(**{**asdict(r), "revoked_at": now}) if r in hit else r for r in rows]
        self._save_index(rows)
        self.write_crl()
        for r in hit:
            log.warning("revoked %s certificate for %r, serial %x", r.role, r.identity, r.serial)
        return hit

    def write_crl(self, validity: dt.timedelta = CRL_VALIDITY) -> Path:
        """(Re)write crl.pem from the index. The broker reads it at start: restart it after."""
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder()
                   .issuer_name(self.cert.subject)
                   .last_update(now - _BACKDATE).next_update(now + validity))
        for row in self.index():
            if row.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder().serial_number(row.serial)
                    .revocation_date(dt.datetime.fromisoformat(row.revoked_at)).build())
        crl = builder.sign(self._key, hashes.SHA256())
        write_atomic(self.crl_file, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return self.crl_file

    def crl_next_update(self) -> dt.datetime | None:
        """When the current CRL expires (None: no CRL written yet)."""
        if not self.crl_file.exists():
            return None
        crl = x509.load_pem_x509_crl(self.crl_file.read_bytes())
        return crl.next_update_utc

    def path(self, row: Issued) -> tuple[Path, Path]:
        """(certificate, key) paths of an index row."""
        return self.dir / row.cert, self.dir / row.key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _safe_dirname(cn: str) -> str:
    """A directory name for any CN (the unchecked test CNs hold '/' and NUL-free wildcards)."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in cn)
