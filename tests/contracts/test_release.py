"""The release trust rules (contracts.release), byte-level: one row per refusal, then rotation.

Manifests are built in memory and signed with keys made here; nothing touches a file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.release import (
    REASONS,
    BadHash,
    BadSignature,
    BadSize,
    Downgrade,
    KeySet,
    Malformed,
    ReleaseError,
    ReleaseVerifier,
    RevokedKey,
    UnknownKey,
    WrongTarget,
    canonical,
    key_id,
    signing_message,
)

PAYLOAD = b"print('hello from slot b')\n"


@dataclass
class Key:
    private: Ed25519PrivateKey

    @property
    def public(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)

    @property
    def id(self) -> str:
        return key_id(self.public)


OLD, NEW, STRANGER = (Key(Ed25519PrivateKey.generate()) for _ in range(3))


def keyset(version: int, *keys: Key, revoked: tuple[Key, ...] = ()) -> KeySet:
    return KeySet(version, {k.id: k.public for k in keys}, frozenset(k.id for k in revoked))


def body(**changes: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"v": 1, "type": "edgefleet-release", "version": [1, 4, 0],
                         "min_version": [1, 3, 0], "class": "fire", "board": "esp32",
                         "keyid": OLD.id,
                         "files": {"app/node.mpy": {"size": len(PAYLOAD),
                                                    "sha256": hashlib.sha256(PAYLOAD).hexdigest()}}}
    b.update(changes)
    return b


def signed(b: dict[str, Any], key: Key = OLD, *,
           sig_keyid: str | None = None) -> tuple[bytes, bytes]:
    data = canonical(b)
    sig = key.private.sign(signing_message(data))
    env = canonical({"keyid": sig_keyid or key.id, "sig": sig.hex()})
    return data, env


def device(floor: tuple[int, int, int] = (1, 0, 0)) -> ReleaseVerifier:
    return ReleaseVerifier(keyset(1, OLD), floor)


def _flip_bit(pair: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    data, env = pair
    return data.replace(b'"board":"esp32"', b'"board":"esp33"'), env


# name, release (manifest bytes, sig bytes), verifier, expected refusal
CASES: list[tuple[str, Callable[[], tuple[bytes, bytes]], Callable[[], ReleaseVerifier],
                  type[ReleaseError]]] = [
    ("a manifest changed after signing", lambda: _flip_bit(signed(body())), device, BadSignature),
    ("a signature by another key under our key's id",
     lambda: signed(body(), STRANGER, sig_keyid=OLD.id), device, BadSignature),
    ("a body naming another key than the signer", lambda: signed(body(keyid=NEW.id)), device,
     BadSignature),
    ("a key the device never trusted", lambda: signed(body(keyid=STRANGER.id), STRANGER), device,
     UnknownKey),
    ("a revoked key",
     lambda: signed(body(), OLD),
     lambda: ReleaseVerifier(keyset(2, NEW, revoked=(OLD,)), (1, 0, 0)), RevokedKey),
    ("a version below the anti-rollback floor", lambda: signed(body(version=[1, 2, 9],
                                                                    min_version=[1, 0, 0])),
     lambda: device((1, 3, 0)), Downgrade),
    ("a release for the flood class", lambda: signed(body(**{"class": "flood"})), device,
     WrongTarget),
    ("a release for another board", lambda: signed(body(board="rp2040")), device, WrongTarget),
    ("min_version above version", lambda: signed(body(min_version=[2, 0, 0])), device, Malformed),
    ("a file path climbing out of the slot",
     lambda: signed(body(files={"../boot.py": {"size": 1, "sha256": "0" * 64}})), device,
     Malformed),
    ("an unknown field", lambda: signed(body(extra=1)), device, Malformed),
    ("a signature envelope that is not JSON", lambda: (canonical(body()), b"\x00garbage"),
     device, Malformed),
    ("a carried key set that revokes every key",
     lambda: signed(body(trust={"version": 2, "keys": {OLD.id: OLD.public.hex()},
                                "revoked": [OLD.id]})), device, Malformed),
]


@pytest.mark.parametrize(("release", "verifier", "refusal"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_bad_release_is_refused_with_its_reason(
        release: Callable[[], tuple[bytes, bytes]], verifier: Callable[[], ReleaseVerifier],
        refusal: type[ReleaseError]) -> None:
    data, sig = release()
    with pytest.raises(ReleaseError) as exc:
        verifier().verify(data, sig, device_class="fire", board="esp32")
    assert type(exc.value) is refusal, exc.value
    assert REASONS[exc.value.code] == refusal.reason


def test_a_good_release_verifies_and_its_files_check() -> None:
    data, sig = signed(body())
    m = device().verify(data, sig, device_class="fire", board="esp32")
    assert m.version == (1, 4, 0) and m.keyid == OLD.id
    device().check_file(m, "app/node.mpy", len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())


@pytest.mark.parametrize(("size", "content", "refusal"), [
    (len(PAYLOAD), PAYLOAD.replace(b"b'", b"a'").replace(b"slot b", b"slot x"), BadHash),
    (len(PAYLOAD) - 1, PAYLOAD[:-1], BadSize),
    (None, b"", BadSize),
], ids=["a tampered file", "a truncated file", "a missing file"])
def test_a_payload_file_that_differs_from_the_manifest_is_refused(
        size: int | None, content: bytes, refusal: type[ReleaseError]) -> None:
    m = device().verify(*signed(body()))
    with pytest.raises(refusal):
        device().check_file(m, "app/node.mpy", size, hashlib.sha256(content).hexdigest())


def test_accepting_a_release_raises_the_floor_so_the_old_one_is_refused_next() -> None:
    old = signed(body(version=[1, 3, 5], min_version=[1, 0, 0]))
    new = signed(body(version=[1, 4, 0], min_version=[1, 4, 0]))
    dev = device()
    dev.verify(*old)
    dev = dev.accept(dev.verify(*new))
    assert dev.floor == (1, 4, 0)
    with pytest.raises(Downgrade):
        dev.verify(*old)


def test_a_key_rotation_travels_in_a_release_and_revokes_the_old_key_from_then_on() -> None:
    rotation = keyset(2, NEW, revoked=(OLD,))
    carrying = signed(body(trust=rotation.to_json()), OLD)     # signed by the key it retires
    by_new_key = signed(body(keyid=NEW.id, version=[1, 5, 0]), NEW)
    another_by_old = signed(body(version=[1, 5, 1]), OLD)
    dev = device()
    with pytest.raises(UnknownKey):                              # not yet trusted
        dev.verify(*by_new_key)
    dev = dev.accept(dev.verify(*carrying))
    assert dev.keys.version == 2 and set(dev.keys.keys) == {NEW.id}
    dev.verify(*by_new_key)
    with pytest.raises(RevokedKey):
        dev.verify(*another_by_old)


def test_an_older_key_set_never_brings_a_revoked_key_back() -> None:
    dev = ReleaseVerifier(keyset(3, NEW, revoked=(OLD,)), (1, 0, 0))
    stale = keyset(2, NEW, OLD)                                 # OLD was still trusted in v2
    dev = dev.accept(dev.verify(*signed(body(keyid=NEW.id, trust=stale.to_json()), NEW)))
    assert dev.keys.version == 3 and OLD.id in dev.keys.revoked
    newer_forgetting = keyset(4, NEW, STRANGER)                 # does not list OLD as revoked
    dev = dev.accept(dev.verify(*signed(body(keyid=NEW.id, trust=newer_forgetting.to_json()),
                                        NEW)))
    assert OLD.id in dev.keys.revoked and OLD.id not in dev.keys.keys
    with pytest.raises(RevokedKey):
        dev.verify(*signed(body(), OLD))


def test_the_signature_covers_a_sha256_of_the_manifest_with_a_domain_prefix() -> None:
    data = canonical(body())
    assert signing_message(data) == b"edgefleet-rel1:" + hashlib.sha256(data).digest()
    # Ed25519 hashes R || A || message: 64 + 47 = 111 bytes, the most one SHA-512 block holds
    # with its padding, so the device's pure-Python SHA-512 runs one compression per verify.
    assert 64 + len(signing_message(data)) <= 111


# -- bundles: the one tar reader of fleet and gateway ------------------------------------------
def _tar(members: list[tuple[str, bytes | None]]) -> bytes:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if body is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_a_bundle_under_one_top_directory_reads_as_the_release() -> None:
    from contracts.release import read_bundle

    data = _tar([("fire-1.4.0/", None), ("fire-1.4.0/manifest.json", b"{}"),
                 ("fire-1.4.0/manifest.sig", b"s"), ("fire-1.4.0/files/app/a.py", b"x")])
    assert read_bundle(data) == {"manifest.json": b"{}", "manifest.sig": b"s",
                                 "files/app/a.py": b"x"}


@pytest.mark.parametrize("members", [
    [("../etc/passwd", b"x")],
    [("/abs", b"x")],
    [("files//a.py", b"x")],
    [("a", b"x"), ("a", b"y")],
    [(f"d{i}/", None) for i in range(8)],  # more entries than the bound (8 here)
])
def test_a_hostile_bundle_is_malformed_before_anything_is_believed(
        members: list[tuple[str, bytes | None]]) -> None:
    from contracts.release import read_bundle

    with pytest.raises(Malformed):
        read_bundle(_tar(members), max_members=7)
