"""The release manifest and its trust rules, said once: what a signed firmware release is, and
the checks the fleet, the gateway and the device make before they believe one.

Pure: bytes and values in, a :class:`Manifest` or a typed :class:`ReleaseError` out; no file,
socket or clock. (``provisioning.release`` does the file work; the device runs the same rules in
MicroPython, ``firmware/app/ota_verify.py``, with the reason codes of :data:`REASONS`.)

A release is three things::

    manifest.json   the signed body: canonical JSON (sorted keys, no spaces, ASCII)
    manifest.sig    {"keyid": "<16 hex>", "sig": "<128 hex>"}
    files/...       the payload, each file named in the manifest with its size and SHA-256

The manifest body::

    {"v": 1, "type": "edgefleet-release",
     "version": [1, 4, 0], "min_version": [1, 3, 0],     anti-rollback: see below
     "class": "fire", "board": "esp32",
     "keyid": "<16 hex>",                                the key that signs this manifest
     "files": {"app/node.mpy": {"size": 1234, "sha256": "<64 hex>"}, ...},
     "trust": {"version": 2, "keys": {"<keyid>": "<64 hex public key>"},
               "revoked": ["<keyid>"]}}                  optional: a new key set

What is signed. Ed25519 (RFC 8032) over ``SIGNING_PREFIX + SHA-256(manifest.json)``: the device
has SHA-256 in C but must compute Ed25519's SHA-512 in Python, so the message it feeds to SHA-512
stays one block whatever the number of files. The key id is the first 8 bytes of SHA-256 of the
raw 32-byte public key, in hex.

Trust (the way TUF rotates its root, threshold 1). The device holds a :class:`KeySet` (version,
trusted keys, revoked key ids) and an anti-rollback floor. A release may carry a new key set in
its signed body; since that body is signed by a key of the current set, the device adopts it once
it accepts the release, if its version is higher than its own (a lower or equal version is
ignored, never a way back). Revocations accumulate: a revoked key id stays revoked, and its
releases are refused from then on with :class:`RevokedKey`, not merely as unknown. A device that
missed a rotation is brought forward by the rotating release itself, which is signed by an older
key: keep it in the update path until every device has taken it.

Anti-rollback. The device refuses a release whose ``version`` is below its floor
(:class:`Downgrade`); accepting a release raises the floor to the release's ``min_version``.

Order of the checks in :meth:`ReleaseVerifier.verify` (the first failure is the reason):

1. the signature envelope parses (:class:`Malformed`);
2. its key id is not revoked (:class:`RevokedKey`) and is trusted (:class:`UnknownKey`);
3. the signature verifies over the manifest bytes (:class:`BadSignature`); nothing in the body
   is read before this;
4. the body parses, names the same key id, and is for this device's class and board
   (:class:`Malformed`, :class:`BadSignature`, :class:`WrongTarget`);
5. its version is not below the floor (:class:`Downgrade`);
6. a key set it carries keeps at least one key that is not revoked (:class:`Malformed`).

Then :meth:`ReleaseVerifier.check_file` per file (:class:`BadSize` before :class:`BadHash`, so
a truncated download says so), and :meth:`ReleaseVerifier.accept` for the state after install.

A release travels between fleet and gateway as a bundle: an uncompressed tar of the release
directory, optionally under one top directory. :func:`read_bundle` reads one (in memory, never
extracted: only regular files and directories with safe relative names, at most
:data:`MAX_MEMBERS` entries, :class:`Malformed` otherwise) and :func:`verify_files` makes every
check above on what it read, refusing a file the manifest does not name. The fleet (upload) and
the gateway (download, cache) both use these two; only the error each one reports differs.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "MANIFEST",
    "MANIFEST_TYPE",
    "MAX_MEMBERS",
    "REASONS",
    "SIGNATURE",
    "SIGNING_PREFIX",
    "BadHash",
    "BadSignature",
    "BadSize",
    "Downgrade",
    "FileEntry",
    "KeySet",
    "Malformed",
    "Manifest",
    "ReleaseError",
    "ReleaseVerifier",
    "RevokedKey",
    "UnknownKey",
    "Version",
    "WrongTarget",
    "canonical",
    "key_id",
    "parse_version",
    "read_bundle",
    "signing_message",
    "verify_files",
]

MANIFEST_TYPE = "edgefleet-release"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"  # the names inside a release
#: Entries a bundle may hold: a hostile tar of many empty members exhausts nothing else.
MAX_MEMBERS = 2000
SIGNING_PREFIX = b"edgefleet-rel1:"  # 15 bytes: R || A || prefix || digest = 111, one block
Version = tuple[int, int, int]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYID = re.compile(r"[0-9a-f]{16}")


# -- errors -----------------------------------------------------------------------------------
class ReleaseError(Exception):
    """A refused release. ``code`` is the reason number the device reports (see REASONS)."""

    code = 0
    reason = "refused"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class Malformed(ReleaseError):
    code, reason = 1, "malformed"


class BadSignature(ReleaseError):
    code, reason = 2, "bad signature"


class UnknownKey(ReleaseError):
    code, reason = 3, "unknown key"


class RevokedKey(ReleaseError):
    code, reason = 4, "revoked key"


class Downgrade(ReleaseError):
    code, reason = 5, "downgrade"


class BadHash(ReleaseError):
    code, reason = 6, "bad hash"


class BadSize(ReleaseError):
    code, reason = 7, "bad size"


class WrongTarget(ReleaseError):
    code, reason = 8, "wrong class or board"


#: The refusal reason codes, one table for fleet, gateway and device (0: no refusal). The device
#: module firmware/app/ota_verify.py carries the same numbers; a test holds them equal.
REASONS: dict[int, str] = {0: "ok", **{cls.code: cls.reason for cls in (
    Malformed, BadSignature, UnknownKey, RevokedKey, Downgrade, BadHash, BadSize, WrongTarget)}}

#: The same reasons as the slugs MQTT events and problem+json answers carry
#: (``wrong class or board`` -> ``wrong_class_or_board``): one spelling for fleet and gateway.
REASON_SLUGS: dict[int, str] = {code: reason.replace(" ", "_") for code, reason in REASONS.items()}


# -- values -----------------------------------------------------------------------------------
def key_id(public_key: bytes) -> str:
    """The id of a raw 32-byte Ed25519 public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def signing_message(manifest_bytes: bytes) -> bytes:
    """What Ed25519 signs for a manifest (one SHA-512 block on the device, any manifest size)."""
    return SIGNING_PREFIX + hashlib.sha256(manifest_bytes).digest()


def canonical(body: Mapping[str, Any]) -> bytes:
    """The one byte form of a manifest body or key set: sorted keys, no spaces, ASCII."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def parse_version(text: str) -> Version:
    """'1.4.0' -> (1, 4, 0)."""
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {text!r} is not MAJOR.MINOR.PATCH")
    major, minor, patch = (int(p) for p in parts)
    return major, minor, patch


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class KeySet:
    """Trusted Ed25519 public keys by key id, the ids revoked for good, and a version."""

    version: int
    keys: Mapping[str, bytes]
    revoked: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version,
                "keys": {k: v.hex() for k, v in sorted(self.keys.items())},
                "revoked": sorted(self.revoked)}

    @classmethod
    def from_json(cls, data: object) -> KeySet:
        """A key set from its JSON form; :class:`Malformed` naming what is wrong."""
        if not isinstance(data, dict) or set(data) != {"version", "keys", "revoked"}:
            raise Malformed("a key set is {version, keys, revoked}")
        version, keys, revoked = data["version"], data["keys"], data["revoked"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise Malformed("key set version must be a positive integer")
        if not isinstance(keys, dict) or not isinstance(revoked, list):
            raise Malformed("key set keys must be an object and revoked a list")
        parsed: dict[str, bytes] = {}
        for kid, pub in keys.items():
            if not isinstance(pub, str) or not _HEX64.fullmatch(pub) \
                    or key_id(bytes.fromhex(pub)) != kid:
                raise Malformed(f"key {kid!r}: not a 32-byte public key with that id")
            parsed[kid] = bytes.fromhex(pub)
        if not all(isinstance(r, str) and _KEYID.fullmatch(r) for r in revoked):
            raise Malformed("revoked entries must be key ids")
        live = {k: v for k, v in parsed.items() if k not in revoked}
        if not live:
            raise Malformed("a key set must keep at least one key that is not revoked")
        return cls(version, live, frozenset(revoked))


@dataclass(frozen=True)
class Manifest:
    version: Version
    min_version: Version
    device_class: str
    board: str
    keyid: str
    files: Mapping[str, FileEntry]
    trust: KeySet | None = None


def _version(value: object, name: str) -> Version:
    if not (isinstance(value, list) and len(value) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 65536
                    for v in value)):
        raise Malformed(f"{name} must be [major, minor, patch], each 0-65535")
    return value[0], value[1], value[2]


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and all(
        p not in ("", ".", "..") for p in parts) and "\\" not in path and "\x00" not in path


def parse_manifest(data: bytes) -> Manifest:
    """A manifest body from its bytes (after the signature is checked); :class:`Malformed`."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Malformed(f"manifest is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Malformed("manifest is not a JSON object")
    needed = {"v", "type", "version", "min_version", "class", "board", "keyid", "files"}
    missing = needed - set(body)
    unknown = set(body) - needed - {"trust"}
    if missing or unknown:
        raise Malformed(f"manifest fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
    if body["v"] != 1 or body["type"] != MANIFEST_TYPE:
        raise Malformed(f"not an {MANIFEST_TYPE} v1 manifest")
    version = _version(body["version"], "version")
    min_version = _version(body["min_version"], "min_version")
    if min_version > version:
        raise Malformed(f"min_version {min_version} is above version {version}")
    for name in ("class", "board", "keyid"):
        if not isinstance(body[name], str) or not body[name]:
            raise Malformed(f"{name} must be a non-empty string")
    files = body["files"]
    if not isinstance(files, dict) or not files:
        raise Malformed("files must name at least one file")
    entries: dict[str, FileEntry] = {}
    for path, entry in files.items():
        if not _safe_path(path):
            raise Malformed(f"file path {path!r} must be relative, without '.' or '..'")
        if not (isinstance(entry, dict) and set(entry) == {"size", "sha256"}
                and isinstance(entry["size"], int) and entry["size"] >= 0
                and isinstance(entry["sha256"], str) and _HEX64.fullmatch(entry["sha256"])):
            raise Malformed(f"file {path!r}: entry must be {{size, sha256 (64 hex)}}")
        entries[path] = FileEntry(entry["size"], entry["sha256"])
    trust = KeySet.from_json(body["trust"]) if "trust" in body else None
    return Manifest(version, min_version, body["class"], body["board"], body["keyid"],
                    entries, trust)


def parse_signature(data: bytes) -> tuple[str, bytes]:
    """(key id, 64-byte signature) from manifest.sig; :class:`Malformed`."""
    try:
        env = json.loads(data)
        kid, sig = env["keyid"], env["sig"]
        if set(env) != {"keyid", "sig"} or not _KEYID.fullmatch(kid) or len(sig) != 128:
            raise ValueError("fields")
        return kid, bytes.fromhex(sig)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise Malformed("manifest.sig must be {\"keyid\": 16 hex, \"sig\": 128 hex}") from None


# -- the trust state machine ------------------------------------------------------------------
class ReleaseVerifier:
    """What one holder (a device, a gateway's cache, the fleet) trusts: a key set and a floor.

    Immutable: :meth:`accept` returns the verifier for after the release is installed.
    """

    def __init__(self, keys: KeySet, floor: Version = (0, 0, 0)) -> None:
        self.keys = keys
        self.floor = floor

    def verify(self, manifest_bytes: bytes, signature_bytes: bytes, *,
               device_class: str | None = None, board: str | None = None) -> Manifest:
        """Steps 1-5 of the module docstring; the manifest, or the first refusal."""
        kid, sig = parse_signature(signature_bytes)
        if kid in self.keys.revoked:
            raise RevokedKey(f"key {kid} was revoked (key set v{self.keys.version})")
        public = self.keys.keys.get(kid)
        if public is None:
            raise UnknownKey(f"key {kid} is not in key set v{self.keys.version}")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                sig, signing_message(manifest_bytes))
        except InvalidSignature:
            raise BadSignature(f"the manifest does not verify under key {kid}") from None
        manifest = parse_manifest(manifest_bytes)
        if manifest.keyid != kid:
            raise BadSignature(f"manifest names key {manifest.keyid}, signed by {kid}")
        if device_class is not None and manifest.device_class != device_class:
            raise WrongTarget(f"release for class {manifest.device_class}, device is "
                              f"{device_class}")
        if board is not None and manifest.board != board:
            raise WrongTarget(f"release for board {manifest.board}, device is {board}")
        if manifest.version < self.floor:
            raise Downgrade(f"version {_v(manifest.version)} is below the anti-rollback "
                            f"floor {_v(self.floor)}")
        if manifest.trust is not None and not _rotated(self.keys, manifest.trust).keys:
            raise Malformed("the carried key set keeps no key that is not revoked")
        return manifest

    @staticmethod
    def check_file(manifest: Manifest, path: str, size: int | None, sha256_hex: str) -> None:
        """One payload file as found (size None: absent); :class:`BadSize`/:class:`BadHash`."""
        entry = manifest.files.get(path)
        if entry is None:
            raise Malformed(f"{path} is not in the manifest")
        if size != entry.size:
            found = "missing" if size is None else f"{size} bytes"
            raise BadSize(f"{path}: {found}, manifest says {entry.size}")
        if sha256_hex != entry.sha256:
            raise BadHash(f"{path}: SHA-256 {sha256_hex[:16]}..., manifest says "
                          f"{entry.sha256[:16]}...")

    def adopt_keys(self, carried: KeySet | None) -> ReleaseVerifier:
        """The key set a verified release carries, adopted (when newer, every revocation kept)
        with the floor unchanged: what a holder that checks releases for many devices (the
        gateway) takes once a device has confirmed the release; its floor is not one device's
        to raise."""
        if carried is None:
            return self
        return ReleaseVerifier(_rotated(self.keys, carried), self.floor)

    def accept(self, manifest: Manifest) -> ReleaseVerifier:
        """The trust after ``manifest`` (verified) is installed and confirmed: floor raised,
        key set rotated. A device adopts it on confirming the trial image, not on writing the
        slot, so a fallback to the old slot stays within the floor."""
        floor = max(self.floor, manifest.min_version)
        keys = self.keys if manifest.trust is None else _rotated(self.keys, manifest.trust)
        return ReleaseVerifier(keys, floor)


# -- bundles ------------------------------------------------------------------------------------
def _member_name(member: tarfile.TarInfo) -> str:
    """A tar member's relative name ('' for the top directory); :class:`Malformed` for anything
    but a plain file or directory with a safe relative name."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if member.name.startswith("/") or (name and not _safe_path(name)):
        raise Malformed(f"tar member {member.name!r}: not a plain relative path")
    if not (member.isfile() or member.isdir()):
        kind = "link" if member.issym() or member.islnk() else "special file"
        raise Malformed(f"tar member {member.name!r} is a {kind}")
    return name


def read_bundle(data: bytes, *, max_members: int = MAX_MEMBERS) -> dict[str, bytes]:
    """The files of a release bundle (tar bytes) by relative path (``manifest.json``,
    ``manifest.sig``, ``files/...``); :class:`Malformed` for a tar that is broken or compressed,
    holds more than ``max_members`` entries, a link, a device, an absolute or ``..`` name, or
    a name twice. A bundle of one top directory holding the release is read as that directory.
    Memory is bounded by ``data``: an uncompressed tar holds no more than its own size."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > max_members:
                    raise Malformed(f"more than {max_members} tar entries")
                name = _member_name(member)
                if member.isdir() or not name:
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    raise Malformed(f"tar member {member.name!r} is unreadable")
                if name in files:
                    raise Malformed(f"tar member {name!r} appears twice")
                files[name] = fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise Malformed(f"not an uncompressed tar: {exc}") from None
    if MANIFEST not in files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) == 1 and all("/" in name for name in files):
            top = tops.pop() + "/"
            files = {name[len(top):]: body for name, body in files.items()}
    return files


def verify_files(files: Mapping[str, bytes], verifier: ReleaseVerifier, *,
                 device_class: str | None = None, board: str | None = None) -> Manifest:
    """Every check a device makes, on a release's files by relative path (:func:`read_bundle`,
    or an extracted release directory): the signature and target (:meth:`ReleaseVerifier.
    verify`), no file the manifest does not name, and each file's size and SHA-256. The
    manifest, or the first :class:`ReleaseError`."""
    if MANIFEST not in files or SIGNATURE not in files:
        raise Malformed(f"the release has no {MANIFEST} and {SIGNATURE}")
    manifest = verifier.verify(files[MANIFEST], files[SIGNATURE], device_class=device_class,
                               board=board)
    payload = {name.removeprefix("files/"): body for name, body in files.items()
               if name.startswith("files/")}
    others = sorted(set(files) - {MANIFEST, SIGNATURE} - {f"files/{n}" for n in payload})
    extra = sorted(set(payload) - set(manifest.files))
    if others or extra:
        raise Malformed(f"files not in the manifest: {', '.join(others + extra)}")
    for name in manifest.files:
        body = payload.get(name)
        verifier.check_file(manifest, name, None if body is None else len(body),
                            hashlib.sha256(body or b"").hexdigest())
    return manifest


def _rotated(current: KeySet, new: KeySet) -> KeySet:
    """``new`` if it is newer, with every revocation ever made kept; else ``current``."""
    if new.version <= current.version:
        return current
    revoked = current.revoked | new.revoked
    return KeySet(new.version, {k: v for k, v in new.keys.items() if k not in revoked}, revoked)


def _v(version: Version) -> str:
    return ".".join(str(p) for p in version)
