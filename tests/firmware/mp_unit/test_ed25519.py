# The device's SHA-512 and Ed25519 verifier (app.sha512, app.ed25519) on RFC vectors, run on the
# MicroPython unix port and on CPython (test_mp_unit.py runs it on both).
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
import mptest

from binascii import hexlify, unhexlify

from app import ed25519
from app.sha512 import sha512
from rfc8032 import VECTORS


def test_sha512_fips_180_vectors():
    # FIPS 180-2 appendix C: one block, empty, and two blocks (896-bit message)
    assert hexlify(sha512(b"abc")).decode() == (
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    assert hexlify(sha512(b"")).decode()[:32] == "cf83e1357eefb8bdf1542850d66d8007"
    two = (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
           b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")
    assert hexlify(sha512(two)).decode() == (
        "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
        "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909")


def test_sha512_at_every_padding_boundary():
    # 111, 112 and 128 bytes: the lengths where padding spills into another block
    for n in (111, 112, 127, 128, 129):
        d = sha512(b"\x61" * n)
        assert len(d) == 64 and d != sha512(b"\x61" * (n + 1))


def test_rfc8032_section_7_1_vectors_verify():
    for name, _secret, public, message, signature in VECTORS:
        ok = ed25519.verify(unhexlify(public), unhexlify(message), unhexlify(signature))
        assert ok, name


def test_a_changed_message_or_signature_or_key_does_not_verify():
    _name, _secret, public, message, signature = VECTORS[2]
    pk, msg, sig = unhexlify(public), unhexlify(message), unhexlify(signature)
    assert not ed25519.verify(pk, msg + b"\x00", sig)
    assert not ed25519.verify(pk, b"\xaf\x83", sig)
    for byte in (0, 31, 32, 63):                       # in R, in S
        bad = bytearray(sig)
        bad[byte] ^= 0x01
        assert not ed25519.verify(pk, msg, bytes(bad)), byte
    other = unhexlify(VECTORS[0][2])
    assert not ed25519.verify(other, msg, sig)
    assert not ed25519.verify(pk, msg, sig[:63])


def test_a_signature_with_s_not_below_l_is_refused():
    # S + L verifies algebraically; RFC 8032 requires S < L (no malleability)
    _name, _secret, public, message, signature = VECTORS[0]
    sig = unhexlify(signature)
    s = int.from_bytes(sig[32:], "little") + ed25519.L
    assert s < 2 ** 256
    bad = sig[:32] + s.to_bytes(32, "little")
    assert not ed25519.verify(unhexlify(public), unhexlify(message), bad)


def test_a_public_key_that_is_no_point_is_refused():
    # y = 2 is not on the curve; y = p is not canonical
    assert ed25519.decode_point(b"\x02" + b"\x00" * 31) is None
    p_bytes = ed25519.P.to_bytes(32, "little")
    assert ed25519.decode_point(p_bytes) is None
    msg, sig = b"", unhexlify(VECTORS[0][4])
    assert not ed25519.verify(b"\x02" + b"\x00" * 31, msg, sig)


def test_the_base_point_round_trips():
    enc = ed25519._encode(ed25519.BASE)
    assert enc == unhexlify("5866666666666666666666666666666666666666666666666666666666666666")
    assert ed25519._encode(ed25519.decode_point(enc)) == enc


mptest.run(globals())
