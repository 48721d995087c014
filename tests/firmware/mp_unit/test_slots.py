# The slot picker's record handling and choice (firmware/picker.py), without a board: whatever
# /slots.json holds, the picker picks; a trial is counted, rolled back after MAX_TRIES boots or
# at once when its slot is empty; a staged image starts as a trial. Runs on both interpreters.

import mptest  # noqa: F401  (puts firmware/ on the path)

import binascii
import os
import random

import picker

DIR = "/tmp/ef-slots-%d" % random.getrandbits(24)
try:
    os.mkdir(DIR)
except OSError:
    pass
SLOTS = DIR + "/slots.json"

BOTH = lambda name: True  # noqa: E731
ONLY_A = lambda name: name == "a"  # noqa: E731


def _write(data):
    with open(SLOTS, "wb") as fh:
        fh.write(data)


def _record(body):
    return ("%08x" % (binascii.crc32(body) & 0xFFFFFFFF)).encode() + b"\n" + body


def test_garbage_of_any_kind_gives_the_default_record():
    default = picker.clean(None)
    for data in (b"", b"\xff\xfe\x00\n{}", b"12345678\n{}", _record(b"[1, 2]"),
                 _record(b'"b"'), b"\xc3\x28" * 40, b'{"active": "b"'):
        _write(data)
        assert picker.load(SLOTS) == default, data


def test_wrong_types_are_replaced_field_by_field():
    _write(_record(b'{"active": "b", "previous": 7, "trial": "yes", "tries": -3, '
                   b'"pending": ["a"], "rolled_back": 1}'))
    slots = picker.load(SLOTS)
    assert slots == {"active": "b", "previous": None, "trial": False, "tries": 0,
                     "pending": None, "rolled_back": False}, slots
    _write(_record(b'{"active": "c", "tries": true}'))
    assert picker.load(SLOTS)["active"] == "a"
    assert picker.load(SLOTS)["tries"] == 0


def test_a_plain_json_record_from_the_first_releases_keeps_its_slot():
    _write(b'{"active": "b", "previous": "a", "trial": false, "tries": 0}')
    assert picker.load(SLOTS)["active"] == "b"


def test_boot_writes_the_record_in_the_crc_format():
    root = DIR + "/"
    _write(b'{"active": "a"}')  # the old plain format is replaced at the first boot
    assert picker.boot(root) == "a"
    with open(SLOTS, "rb") as fh:
        data = fh.read()
    crc, body = data.split(b"\n", 1)
    assert crc == ("%08x" % (binascii.crc32(body) & 0xFFFFFFFF)).encode()
    assert picker.load(SLOTS)["active"] == "a"


def test_a_trial_gets_max_tries_boots_then_rolls_back():
    slots = picker.clean({"active": "b", "previous": "a", "trial": True})
    for boot in range(1, picker.MAX_TRIES + 1):
        slots = picker.choose(slots, BOTH)
        assert slots["active"] == "b" and slots["tries"] == boot, slots
    slots = picker.choose(slots, BOTH)
    assert slots["active"] == "a" and slots["rolled_back"] and not slots["trial"], slots


def test_an_empty_trial_slot_falls_back_at_once():
    slots = picker.choose(picker.clean({"active": "b", "previous": "a", "trial": True}), ONLY_A)
    assert slots["active"] == "a" and slots["rolled_back"], slots


def test_a_missing_confirmed_slot_falls_back_at_once():
    slots = picker.choose(picker.clean({"active": "b", "previous": "a"}), ONLY_A)
    assert slots["active"] == "a", slots


def test_a_staged_image_starts_as_a_trial_and_clears_the_roll_back_flag():
    slots = picker.clean({"active": "a", "previous": "b", "pending": "b", "rolled_back": True})
    slots = picker.choose(slots, BOTH)
    assert slots["active"] == "b" and slots["previous"] == "a" and slots["trial"], slots
    assert slots["pending"] is None and not slots["rolled_back"]
    assert slots["tries"] == 1


def test_a_staged_image_that_is_not_there_is_forgotten():
    slots = picker.choose(picker.clean({"active": "a", "pending": "b"}), ONLY_A)
    assert slots["active"] == "a" and slots["pending"] is None and not slots["trial"], slots


mptest.run(globals())
