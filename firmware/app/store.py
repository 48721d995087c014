# Small persistent records in flash (thresholds, boot counter, slot state) with atomic writes.
#
# A record is a file of two lines: the CRC-32 of the body in hex, then the JSON body. It is
# written to "<name>.tmp" and renamed over the old file, so a power cut leaves either the old or
# the new record, never half of one (rename is atomic on LittleFS and POSIX). A record whose CRC
# does not match reads as corrupt rather than as wrong thresholds.

import binascii
import json
import os


class CorruptRecord(ValueError):
    pass


def _crc(body):
    return "%08x" % (binascii.crc32(body) & 0xFFFFFFFF)


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
    if nl < 0:
        raise CorruptRecord(path)
    body = data[nl + 1:]
    if data[:nl].decode() != _crc(body):
        raise CorruptRecord(path)
    try:
        return json.loads(body)
    except ValueError:
        raise CorruptRecord(path)


def write(path, record):
    body = json.dumps(record).encode()
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(_crc(body).encode())
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
