"""A release bundle as the fleet receives it: an uncompressed tar of a release directory
(``manifest.json``, ``manifest.sig``, ``files/...``, optionally under one top directory),
checked with :mod:`contracts.release` exactly as a device will check it.

Pure except :func:`load_trust` (one file read): bytes in, a :class:`Manifest` or a
:class:`BundleRefused` carrying the reason slug out. The tar reader and the checks are the
gateway's too (:func:`contracts.release.read_bundle`, :func:`contracts.release.verify_files`):
the tar is read in memory and never extracted, only regular files count, every name must be a
safe relative path, and the member count is bounded, so a hostile archive cannot write anywhere
or exhaust anything but its own (already bounded) size. Verifying hashes every file and checks
a signature: CPU work the HTTP layer runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.release import (
    REASON_SLUGS,
    BadHash,
    BadSignature,
    BadSize,
    Downgrade,
    KeySet,
    Malformed,
    Manifest,
    ReleaseError,
    ReleaseVerifier,
    RevokedKey,
    UnknownKey,
    WrongTarget,
    read_bundle,
    verify_files,
)

__all__ = ["REFUSAL_SLUGS", "BundleRefused", "load_trust", "parse_trust", "verify_bundle"]

#: The reason slug each refusal carries in problem+json, spelled as in OtaEvent reasons.
REFUSAL_SLUGS: dict[type[ReleaseError], str] = {cls: REASON_SLUGS[cls.code] for cls in (
    Malformed, BadSignature, UnknownKey, RevokedKey, Downgrade, BadHash, BadSize, WrongTarget)}


class BundleRefused(Exception):
    """The bundle is not a release the fleet may serve. ``reason`` is a slug (``unsigned``,
    ``malformed``, ``bad_signature``, ``unknown_key``, ``revoked_key``, ``downgrade``,
    ``bad_hash``, ``bad_size``, ``wrong_class_or_board``); ``code`` the contracts.release number."""

    def __init__(self, reason: str, code: int, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.code, self.detail = reason, code, detail

    @classmethod
    def of(cls, error: ReleaseError) -> BundleRefused:
        return cls(REFUSAL_SLUGS.get(type(error), "malformed"), error.code, error.detail)


def parse_trust(data: object) -> ReleaseVerifier:
    """A verifier from a device trust file's JSON (``{"keys": <key set>, "floor": [...]}``) or
    from a bare key set (floor 0.0.0). :class:`Malformed` naming what is wrong."""
    if isinstance(data, dict) and set(data) == {"keys", "floor"}:
        floor = data["floor"]
        if not (isinstance(floor, list) and len(floor) == 3
                and all(isinstance(v, int) and v >= 0 for v in floor)):
            raise Malformed("floor must be [major, minor, patch]")
        return ReleaseVerifier(KeySet.from_json(data["keys"]), (floor[0], floor[1], floor[2]))
    return ReleaseVerifier(KeySet.from_json(data))


def load_trust(path: Path) -> ReleaseVerifier:
    """The fleet's release trust from ``path``; ValueError naming the file and the problem."""
    try:
        return parse_trust(json.loads(path.read_text()))
    except OSError as exc:
        raise ValueError(f"release trust {path}: cannot read: {exc.strerror}") from None
    except (ValueError, ReleaseError) as exc:
        raise ValueError(f"release trust {path}: {exc}") from None


def verify_bundle(data: bytes, verifier: ReleaseVerifier) -> Manifest:
    """Every check a device makes, on a bundle's bytes: the manifest, or :class:`BundleRefused`.
    A bundle without ``manifest.sig`` is ``unsigned``; a file beside the manifest's is
    ``malformed`` (a device would never see it, so nothing unverified is served)."""
    try:
        files = read_bundle(data)
    except ReleaseError as exc:
        raise BundleRefused.of(exc) from None
    if "manifest.json" not in files:
        raise BundleRefused("malformed", Malformed.code, "no manifest.json")
    if "manifest.sig" not in files:
        raise BundleRefused("unsigned", Malformed.code, "no manifest.sig: sign the release "
                            "with `edgefleet release sign`")
    try:
        return verify_files(files, verifier)
    except ReleaseError as exc:
        raise BundleRefused.of(exc) from None
