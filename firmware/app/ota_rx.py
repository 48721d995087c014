# The OTA receiver: takes the chunk and control writes into the OTA register window
# (common.toml [ota], docs/registers.md) and writes the image stream (hardware/ota_image.py)
# chunk by chunk into /data/ota.img. Imported by the node on the first such write, never at
# boot; an offer is app/ota_offer.py's (its code comes and goes with each offer, and this
# receiver is dropped meanwhile: the two never share the heap).
#
# Kept as small as it can be, because it lives beside a running node: under the 64 KB heap cap
# the worst class (air) keeps about 3.6 KB free, and a receiver that also unpacked the stream
# into the slot's files as they came (paths, directories, entry headers) measured 6.6 KB of
# heap for its code alone. So this only appends bytes to one file; the unpacking into the
# inactive slot, like the verification, happens at the next boot with the whole heap free
# (app/ota_boot.py, run by main.py). A chunk goes from the Modbus frame buffer to the file.
# The slots themselves are untouched while bytes arrive: the old image stays a valid fallback.
#
# Progress is one record (/data/ota.json, record.py's CRC'd atomic format), written every
# CHECKPOINT chunks and at the end, after the file is flushed:
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


class Receiver:
    def __init__(self, node):
        self.node = node
        self.path = node.data_dir + "ota.json"
        self.fh = None
        self.last = -1   # CRC of the last chunk taken: its repeat is a no-op
        try:
            self.rec = store.read(self.path) or {}
        except store.CorruptRecord:
            self.rec = {}

    def _save(self):
        self.rec["regs"] = list(self.node.ota_inputs)
        store.write(self.path, self.rec)

    def _close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def _show(self, nxt):
        # chunks before nxt are taken: bytes received follow from the chunk size
        regs = self.node.ota_inputs
        rec = self.rec
        received = nxt * rec["cb"]
        if received > rec["size"]:
            received = rec["size"]
        regs[1] = received >> 16
        regs[2] = received & 0xFFFF
        regs[3] = nxt

    def write(self, offset, count, f, at):
        regs = self.node.ota_inputs
        rec = self.rec
        if offset == _CONTROL and count == 1:
            value = (f[at] << 8) | f[at + 1]
            state = regs[0]
            if value == _COMMIT:
                if state == _RECEIVING and regs[3] == rec["n"]:
                    self._close()
                    regs[0] = _VERIFY_PENDING
                    self._save()
                elif state != _VERIFY_PENDING:
                    return 3 if state == _RECEIVING else 4
                self.node.reboot_pending = True   # after the answer: the picker checks it
                return 0
            if value == _ABORT:
                self._close()
                if state in (_RECEIVING, _VERIFY_PENDING):
                    regs[0] = 0
                    self._save()
                return 0
            return 3
        if offset != _CHUNK or count < 3:
            return 2
        if regs[0] != _RECEIVING:
            return 4
        index = (f[at] << 8) | f[at + 1]
        n = rec["n"]
        if index >= n:
            return 2
        cb = rec["cb"]
        length = cb if index < n - 1 else rec["size"] - index * cb
        end = at + 2 + 2 * ((length + 1) // 2)
        if count != (end - at) // 2 + 1:
            return 3
        crc = (f[end] << 8) | f[end + 1]
        mv = memoryview(f)[at:at + 2 + length]
        if crc16(mv) != crc:
            return 3
        if index != regs[3]:
            return 0 if index == regs[3] - 1 and crc == self.last else 2
        try:
            if self.fh is None:   # resuming after a restart: from the checkpoint on
                self.fh = open(self.node.data_dir + "ota.img", "r+b")
                self.fh.seek(index * cb)
            self.fh.write(mv[2:])
            self._show(index + 1)
            self.last = crc
            if regs[3] % CHECKPOINT == 0 or regs[3] == n:
                self.fh.flush()
                self._save()
        except OSError:   # the flash failed: back to the checkpoint (the master reads it)
            self._close()
            self.last = -1
            self._show(index - index % CHECKPOINT)
            return 4
        return 0
