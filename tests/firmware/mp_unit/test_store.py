# Flash records (/record.py, shared by the slot picker and the application) against damaged
# flash: whatever bytes a record file holds, read() gives a dict, None or CorruptRecord, never
# UnicodeError or a non-dict. A seeded fuzz over random byte strings, run on MicroPython and on CPython.

import mptest  # noqa: F401  (puts firmware/ on the path)

import binascii
import os
import random

import record as store

DIR = "/tmp/ef-store-%d" % random.getrandbits(24)
PATH = DIR + "/rec.json"
try:
    os.mkdir(DIR)
except OSError:
    pass


def _crc_line(body):
    return ("%08x" % (binascii.crc32(body) & 0xFFFFFFFF)).encode()


def _random_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def _read(data):
    with open(PATH, "wb") as fh:
        fh.write(data)
    try:
        value = store.read(PATH)
    except store.CorruptRecord:
        return "corrupt"
    assert isinstance(value, dict), (data, value)
    return value


def _candidates(rng):
    """Byte strings shaped like damage a record can suffer."""
    good_body = b'{"class": "fire", "holding": {"smoke_alarm": 400}}'
    good = _crc_line(good_body) + b"\n" + good_body
    kind = rng.randrange(7)
    if kind == 0:  # pure noise, any length
        return _random_bytes(rng, rng.randrange(0, 80))
    if kind == 1:  # a CRC line of random bytes (not UTF-8) before a good body
        return _random_bytes(rng, 8) + b"\n" + good_body
    if kind == 2:  # a right CRC over a body of random bytes: the JSON parser sees noise
        body = _random_bytes(rng, rng.randrange(0, 40))
        return _crc_line(body) + b"\n" + body
    if kind == 3:  # a torn write: the record cut anywhere
        return good[:rng.randrange(0, len(good))]
    if kind == 4:  # bit rot: one flipped bit anywhere
        data = bytearray(good)
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 5:  # a right CRC over JSON that is not an object
        body = rng.choice([b"[]", b"42", b'"text"', b"null", b"true", b"[1, 2]", b"3.5"])
        return _crc_line(body) + b"\n" + body
    # a right CRC over text with invalid UTF-8 inside a JSON string
    body = b'{"class": "' + _random_bytes(rng, 4) + b'"}'
    return _crc_line(body) + b"\n" + body


def test_a_good_record_reads_back():
    store.write(PATH, {"boots": 7})
    assert store.read(PATH) == {"boots": 7}


def test_a_crc_line_that_is_not_utf8_is_a_corrupt_record():
    body = b'{"boots": 3}'
    assert _read(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\n" + body) == "corrupt"
    assert _read(b"\xc3\x28\n" + body) == "corrupt"


def test_a_right_crc_over_a_non_object_is_a_corrupt_record():
    for body in (b"[]", b"42", b"null"):
        assert _read(_crc_line(body) + b"\n" + body) == "corrupt"


def test_random_bytes_never_raise_anything_but_corrupt_record():
    rng = random.Random(2026) if hasattr(random, "Random") else random
    if rng is random:
        random.seed(2026)
    outcomes = {}
    for _ in range(1500):
        data = _candidates(rng)
        result = _read(data)  # raises (failing the test) on anything but CorruptRecord
        key = "corrupt" if result == "corrupt" else "dict"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("corrupt", 0) > 500, outcomes


def test_no_file_is_none():
    try:
        os.remove(PATH)
    except OSError:
        pass
    assert store.read(PATH) is None


mptest.run(globals())
