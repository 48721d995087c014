# Small persistent records in flash (thresholds, boot counter, slot state): one format, one
# atomic write, used by the slot picker (picker.py) and by the application (app/node.py).
#
# This file sits beside main.py at the root of the flash, outside the A/B application slots, and
# like main.py it never changes in an update: the picker must be able to read the slot record
# even when both slots hold broken images.
#
# A record is a file of two lines: the CRC-32 of the body in lower-case hex, then the JSON body.
# It is written to "<name>.tmp" and renamed over the old file, so a power cut leaves either the
# old or the new record, never half of one (rename is atomic on LittleFS and POSIX). Whatever
# bytes a record file holds, read() returns a dict, None (no record) or raises CorruptRecord:
# never UnicodeError, never a list or a number where a dict was written.

import binascii
import json
import os


class CorruptRecord(ValueError):
    pass


def _crc(body):
    return b"%08x" % (binascii.crc32(body) & 0xFFFFFFFF)


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def read(path):
    """The stored dict, None when there is no record, CorruptRecord when it is damaged."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    nl = data.find(b"\n")
    # Compare bytes with bytes: a CRC line that is not text (flash bit rot, a torn write on a
    # filesystem without atomic rename) is simply a mismatch, not a UnicodeError.
    if nl != 8 or data[:nl] != _crc(data[nl + 1:]):
        raise CorruptRecord(path)
    try:
        record = json.loads(data[nl + 1:])
    except (ValueError, UnicodeError):
        raise CorruptRecord(path)
    if not isinstance(record, dict):
        raise CorruptRecord(path)
    return record


def write(path, record):
    body = json.dumps(record).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(_crc(body))
        fh.write(b"\n")
        fh.write(body)
    os.rename(tmp, path)


def makedirs(path):
    # MicroPython's os has no makedirs; create each missing level.
    parts = path.rstrip("/").split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub and not exists(sub):
            os.mkdir(sub)
