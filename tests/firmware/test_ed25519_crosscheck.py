"""The device's Ed25519 verifier (firmware/app/ed25519.py) held against `cryptography` on
CPython: the RFC 8032 vectors re-derived, random keys and messages, and a tampered copy of each.

The same module runs on the MicroPython unix port in mp_unit/test_ed25519.py.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.release import REASONS

sys.path.insert(0, str(Path(__file__).parent / "mp_unit"))
from rfc8032 import VECTORS


@pytest.fixture
def ed25519(firmware_path: Path):  # type: ignore[no-untyped-def]
    from app import ed25519 as mod

    return mod


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


@pytest.mark.parametrize("vector", VECTORS, ids=[v[0] for v in VECTORS])
def test_the_transcribed_rfc_vectors_are_what_cryptography_signs(vector: tuple[str, ...]) -> None:
    _name, secret, public, message, signature = vector
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert _raw(key).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature


def test_random_keys_and_messages_verify_like_cryptography(ed25519) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(8032)
    for n in range(120):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        msg = rng.randbytes(rng.choice([0, 1, 47, 64, 111, 112, 200, rng.randrange(1000)]))
        sig = key.sign(msg)
        assert ed25519.verify(_raw(key), msg, sig), n
        bad = bytearray(sig)
        bad[rng.randrange(64)] ^= 1 << rng.randrange(8)
        assert not ed25519.verify(_raw(key), msg, bytes(bad)), n
        if msg:
            assert not ed25519.verify(_raw(key), msg[:-1], sig), n


def test_the_device_sha512_is_sha512(firmware_path: Path) -> None:
    from app.sha512 import sha512

    rng = random.Random(512)
    for n in [*range(0, 300), 1023, 4096]:
        data = rng.randbytes(n)
        assert sha512(data) == hashlib.sha512(data).digest(), n


def test_the_device_numbers_its_refusals_as_the_contract_does(firmware_path: Path) -> None:
    from app import ota_verify

    assert ota_verify.REASONS == REASONS
    from contracts.release import SIGNING_PREFIX
    assert ota_verify.PREFIX == SIGNING_PREFIX
