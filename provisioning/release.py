"""Release files on disk: signing keys, building a release directory from the firmware app,
signing its manifest, and verifying one the way a device will.

The format and the trust rules are :mod:`contracts.release`; this module only reads and writes
files around them. A release directory::

    manifest.json   the body (canonical JSON); ``keyid`` is empty until signed
    manifest.sig    written by :func:`sign`
    files/app/...   the app compiled to .mpy by mpy-cross (hardware.mpy)

Signing keys are Ed25519, kept offline: ``NAME.key`` (PKCS8 PEM, 0600) and ``NAME.pub``
(``{"keyid", "public"}``, safe to share). A key set file (``keyset.json``) is the JSON form of
:class:`contracts.release.KeySet`; a device trust file adds the anti-rollback floor.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.release import (
    MANIFEST_TYPE,
    KeySet,
    Malformed,
    Manifest,
    ReleaseVerifier,
    Version,
    canonical,
    key_id,
    signing_message,
)
from hardware.mpy import FIRMWARE_APP, compile_app
from provisioning.ca import write_private

__all__ = [
    "build",
    "device_trust",
    "generate_key",
    "load_keyset",
    "load_public",
    "load_trust",
    "make_keyset",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024


# -- keys -------------------------------------------------------------------------------------
def generate_key(private_path: Path) -> str:
    """A new offline signing key: ``private_path`` (0600) and ``.pub`` beside it; its key id."""
    key = Ed25519PrivateKey.generate()
    write_private(private_path, key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    kid = key_id(public)
    private_path.with_suffix(".pub").write_text(
        json.dumps({"keyid": kid, "public": public.hex()}) + "\n")
    log.info("made signing key %s at %s", kid, private_path)
    return kid


def _load_private(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise Malformed(f"{path} is not an Ed25519 private key")
    return key


def load_public(path: Path) -> bytes:
    """The raw public key from a ``.pub`` file (its key id checked)."""
    data = json.loads(path.read_text())
    public = bytes.fromhex(data["public"])
    if len(public) != 32 or key_id(public) != data["keyid"]:
        raise Malformed(f"{path}: key id does not match the public key")
    return public


def make_keyset(version: int, public_files: list[Path], revoked: list[str]) -> KeySet:
    keys = {key_id(p): p for p in (load_public(f) for f in public_files)}
    return KeySet.from_json(KeySet(version, keys, frozenset(revoked)).to_json())


def load_keyset(path: Path) -> KeySet:
    return KeySet.from_json(json.loads(path.read_text()))


def device_trust(keys: KeySet, floor: Version) -> dict[str, Any]:
    """The JSON a device keeps (``trust.json``): its key set and anti-rollback floor."""
    return {"keys": keys.to_json(), "floor": list(floor)}


def load_trust(path: Path) -> ReleaseVerifier:
    data = json.loads(path.read_text())
    floor = data["floor"]
    return ReleaseVerifier(KeySet.from_json(data["keys"]), (floor[0], floor[1], floor[2]))


# -- build and sign ---------------------------------------------------------------------------
def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _payload(release: Path) -> dict[str, Path]:
    root = release / "files"
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def build(out: Path, *, version: Version, min_version: Version, device_class: str, board: str,
          source: Path = FIRMWARE_APP, compiled: bool = True) -> Path:
    """A release directory at ``out``: the app (compiled with mpy-cross, or copied as .py)
    and an unsigned manifest. Refuses to write into a non-empty directory."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    files = out / "files"
    if compiled:
        compile_app(files, source)
    else:
        for src in sorted(source.rglob("*.py")):
            dest = files / "app" / src.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    entries = {name: dict(zip(("size", "sha256"), _digest(p), strict=True))
               for name, p in _payload(out).items()}
    body = {"v": 1, "type": MANIFEST_TYPE, "version": list(version),
            "min_version": list(min_version), "class": device_class, "board": board,
            "keyid": "", "files": entries}
    (out / "manifest.json").write_bytes(canonical(body))
    log.info("built release %s for %s/%s: %d files", version, device_class, board,
             len(entries))
    return out


def sign(release: Path, private_key: Path, keyset: KeySet | None = None) -> str:
    """Sign the manifest with an offline key (optionally carrying a new key set); its key id."""
    key = _load_private(private_key)
    public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                           serialization.PublicFormat.Raw)
    kid = key_id(public)
    body = json.loads((release / "manifest.json").read_bytes())
    body["keyid"] = kid
    if keyset is not None:
        body["trust"] = keyset.to_json()
    data = canonical(body)
    (release / "manifest.json").write_bytes(data)
    sig = key.sign(signing_message(data))
    (release / "manifest.sig").write_text(json.dumps({"keyid": kid, "sig": sig.hex()}) + "\n")
    log.info("signed release %s with key %s", release, kid)
    return kid


def verify(release: Path, verifier: ReleaseVerifier, *, device_class: str | None = None,
           board: str | None = None) -> Manifest:
    """Every check a device makes, on a release directory; the manifest or a ReleaseError."""
    sig = release / "manifest.sig"
    if not sig.exists():
        raise Malformed(f"{release} is not signed (no manifest.sig)")
    manifest = verifier.verify((release / "manifest.json").read_bytes(), sig.read_bytes(),
                               device_class=device_class, board=board)
    found = _payload(release)
    extra = sorted(set(found) - set(manifest.files))
    if extra:
        raise Malformed(f"files not in the manifest: {', '.join(extra)}")
    for name in manifest.files:
        path = found.get(name)
        size, digest = _digest(path) if path is not None else (None, "")
        verifier.check_file(manifest, name, size, digest)
    return manifest
