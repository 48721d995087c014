# The OTA receiver: takes the chunk and control writes into the OTA register window
# (common.toml [ota], docs/registers.md) and writes the image stream (hardware/ota_image.py)
# chunk by chunk into /data/ota.img. Imported by the node on the first such write, never at
# boot; an offer is app/ota_offer.py's (its code comes and goes with each offer, and this
# receiver is dropped meanwhile: the two never share the heap).
#
# Kept as small as it can be, because it lives beside a running node: under the 64 KB heap cap
# the tightest classes (fire, air) keep about 5 KB free, and a receiver that also unpacked the
# stream into the slot's files as they came (paths, directories, entry headers) measured 6.6 KB of
# heap for its code alone. So this only appends bytes to one file; the unpacking into the
# inactive slot, like the verification, happens at the next boot with the whole heap free
# (app/ota_boot.py, run by main.py). A chunk goes from the Modbus frame buffer to the file.
# The slots themselves are untouched while bytes arrive: the old image stays a valid fallback.
#
# Progress is one record (/data/ota.json, record.py's CRC'd atomic format), written every
# CHECKPOINT chunks and at the end, after the file is flushed, and only once the chunk's answer
# is on the wire (node.after_reply): the flush and the atomic rename take milliseconds (a
# LittleFS block program on an ESP32), and the master's next chunk need not wait for them. The
# answer means "in the file", not "recorded": a power cut before the record costs at most
# CHECKPOINT chunks again, as before. The record is:
#   {"regs": [the 8 OTA input registers: state, received (2 words), next chunk, reason,
#             version (3)],
#    "id": the offer's version, sizes and SHA-256 (hex: the image's identity),
#    "size", "cb": chunk bytes, "n": chunks,
#    "slot": the slot to install into, "tries": boot-time checks begun}
# A node restarted mid-transfer (a power cut) reports the checkpoint in ota_next_chunk; the
# master offers the same image again and resumes there. Chunks written after the checkpoint are
# written again at the same offsets: the same bytes, so a resume always completes the stream.
import record as store
from app.modbus import crc16
from micropython import const

# common.toml [ota] (app/otadef.py is the generated copy; a test holds these equal to it)
_CONTROL = const(23)
_CHUNK = const(24)
_RECEIVING = const(1)
_VERIFY_PENDING = const(2)
_COMMIT = const(1)
_ABORT = const(2)
CHECKPOINT = 16   # chunks between progress records: a power cut costs at most this many again


_rec = None   # the record (None: not read yet)
_fh = None    # the image file, open while chunks come
_last = -1    # CRC of the last chunk taken: its repeat is a no-op


def _save(node):
    _rec["regs"] = list(node.ota_inputs)
    store.write(node.data_dir + "ota.json", _rec)


def write(node, offset, count, f, at):
    """A chunk or control write (the node hands over the offer elsewhere); 0 or an exception
    code."""
    global _rec, _fh, _last
    regs = node.ota_inputs
    if _rec is None:
        try:
            _rec = store.read(node.data_dir + "ota.json") or {}
        except store.CorruptRecord:
            _rec = {}
    if offset == _CONTROL and count == 1:
        value = (f[at] << 8) | f[at + 1]
        state = regs[0]
        if value != _COMMIT and value != _ABORT:
            return 3
        if _fh is not None:
            _fh.close()
            _fh = None
        if value == _ABORT:
            if state == _RECEIVING or state == _VERIFY_PENDING:
                regs[0] = 0
                _save(node)
            return 0
        if state == _RECEIVING and regs[3] == _rec["n"]:
            regs[0] = _VERIFY_PENDING
            _save(node)
        elif state != _VERIFY_PENDING:
            return 3 if state == _RECEIVING else 4
        node.reboot_pending = True   # after the answer: the picker checks the image
        return 0
    if offset != _CHUNK or count < 3:
        return 2
    if regs[0] != _RECEIVING:
        return 4
    index = (f[at] << 8) | f[at + 1]
    n = _rec["n"]
    if index >= n:
        return 2
    cb = _rec["cb"]
    length = cb if index < n - 1 else _rec["size"] - index * cb
    end = at + 2 + 2 * ((length + 1) // 2)
    if count != (end - at) // 2 + 1:
        return 3
    crc = (f[end] << 8) | f[end + 1]
    mv = memoryview(f)[at:at + 2 + length]
    if crc16(mv) != crc:
        return 3
    if index != regs[3]:
        return 0 if index == regs[3] - 1 and crc == _last else 2
    try:
        if _fh is None:   # the first chunk since boot or an offer: from the checkpoint on
            _fh = open(node.data_dir + "ota.img", "r+b")
            _fh.seek(index * cb)
        _fh.write(mv[2:])
        index += 1
        _last = crc
    except OSError:   # the flash failed: back to the checkpoint (the master reads it)
        _fail(regs, index)
        return 4
    _show(regs, index, cb, _rec["size"])
    if index % CHECKPOINT == 0 or index == n:
        node.after_reply = checkpoint
    return 0


def checkpoint(node):
    """Make the chunks taken so far durable, then record them; run by the node right after
    a chunk's answer has gone out. A flash error falls back to the last checkpoint: the
    master's next chunk is answered exception 02 (or its commit 03), and it reads
    ota_next_chunk and resumes there."""
    regs = node.ota_inputs
    try:
        _fh.flush()
        _save(node)
    except (OSError, AttributeError):   # AttributeError: no file open (cannot happen)
        _fail(regs, regs[3] - (regs[3] % CHECKPOINT or CHECKPOINT))


def _fail(regs, index):
    global _fh, _last
    if _fh is not None:
        try:
            _fh.close()
        except OSError:
            pass
        _fh = None
    _last = -1
    _show(regs, index - index % CHECKPOINT, _rec["cb"], _rec["size"])


def _show(regs, nxt, cb, size):
    # chunks before nxt are taken: bytes received follow from the chunk size
    received = nxt * cb
    if received > size:
        received = size
    regs[1] = received >> 16
    regs[2] = received & 0xFFFF
    regs[3] = nxt
