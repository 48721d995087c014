# The OTA receiver: takes the writes into the OTA register window (common.toml [ota],
# docs/registers.md) and unpacks the image stream (hardware/ota_image.py) straight into the
# inactive slot's files as the chunks arrive. Imported by the node on the first write into the
# window (never at boot: a running node has about 3 KB of heap to spare); the image is never
# held in memory, a chunk goes from the Modbus frame buffer to the file.
#
# Progress lives in one record (/data/ota.json, record.py's CRC'd atomic format), written at a
# checkpoint every CHECKPOINT chunks and at the end, after the open file is flushed:
#   {"state", "reason", "v", "id", "size", "cb", "n", "slot", "tries",
#    "next", "rx",                       next chunk and bytes received at the checkpoint
#    "ph", "hdr", "path", "fsize", "left"}   the stream parser at the checkpoint
# A node restarted mid-transfer (a power cut) reports the checkpoint in ota_next_chunk; the
# master offers again and resumes there. Chunks written after the checkpoint are written again,
# to the same file offsets (the parser reopens the file at size - left and overwrites): the
# result is the same bytes, so a power cut at any point leaves a slot that a resume completes.
#
# Nothing here trusts the image: it lands in the slot the node is NOT running, the slot is no
# longer anyone's fallback while it is written, and only the device's own check at the next boot
# (app/ota_boot.py, run by main.py) can hand it to the slot picker.
import binascii
import os

import record as store
from app import otadef
from app.modbus import crc16

CHECKPOINT = 16   # chunks between progress records: a power cut costs at most this many again
MALFORMED = 1     # contracts/release.py REASONS
_MAGIC = b"EFI1"
_DIR = 0x4000


def _wipe(path):
    """Remove a slot's files (a symlink is unlinked, never followed)."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        full = path + "/" + entry[0]
        if entry[1] == _DIR:
            _wipe(full)
            os.rmdir(full)
        else:
            os.remove(full)


def _safe(path):
    if not path or path[0] == "/" or "\\" in path:
        return False
    if path != "manifest.json" and path != "manifest.sig" and path[:4] != "app/":
        return False
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


class Receiver:
    def __init__(self, node):
        self.node = node
        self.root = node.hal.root
        self.path = node.data_dir + "ota.json"
        self.hdr = bytearray(260)   # an entry header: length, path, size
        self._fh = None
        self._last_crc = -1
        self._load()

    # -- the record ---------------------------------------------------------------------
    def _load(self):
        """State from the record: the last checkpoint (what survived)."""
        self._close()
        try:
            rec = store.read(self.path) or {}
        except store.CorruptRecord:
            rec = {}
        self.rec = rec
        self.ph = rec.get("ph", 0)
        hdr = binascii.unhexlify(rec.get("hdr", ""))
        self.hn = len(hdr)
        self.hdr[:self.hn] = hdr
        self.left = rec.get("left", 0)
        self._last_crc = -1
        self.node.show_ota(rec)

    def _checkpoint(self):
        fh = self._fh
        if fh is not None:
            fh.flush()
        rec = self.rec
        rec["ph"] = self.ph
        rec["hdr"] = binascii.hexlify(self.hdr[:self.hn]).decode()
        rec["left"] = self.left
        store.write(self.path, rec)

    def _close(self):
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def _refuse(self, reason):
        self._close()
        self.rec["state"] = otadef.REFUSED
        self.rec["reason"] = reason
        store.write(self.path, self.rec)
        self.node.show_ota(self.rec)

    # -- writes into the window -----------------------------------------------------------
    def write(self, offset, count, f, at):
        if offset == otadef.OFFER and count == otadef.OFFER_WORDS:
            return self._offer(f, at)
        if offset == otadef.CONTROL and count == 1:
            return self._control((f[at] << 8) | f[at + 1])
        if offset == otadef.CHUNK and count >= 3:
            try:
                return self._chunk(count, f, at)
            except OSError:
                self._load()   # the flash failed: back to the checkpoint, the master resumes
                return 4
        return 2

    def _offer(self, f, at):
        v = [(f[at + 2 * i] << 8) | f[at + 2 * i + 1] for i in range(7)]
        size = (v[3] << 16) | v[4]
        cb, n = v[5], v[6]
        if not size or cb < 2 or cb > otadef.MAX_CHUNK_BYTES or cb % 2 or \
                n != (size + cb - 1) // cb:
            return 3
        node = self.node
        if node.slot_flags.get("trial"):
            return 6   # busy: the running trial image must be confirmed (or roll back) first
        ident = binascii.hexlify(f[at + 14:at + 46]).decode()
        rec = self.rec
        version = v[:3]
        if rec.get("id") == ident and rec.get("size") == size and rec.get("cb") == cb and \
                rec.get("v") == version and rec.get("state") in (otadef.RECEIVING,
                                                                 otadef.VERIFY_PENDING,
                                                                 otadef.STAGED):
            return 0   # the same image again: resume (or it is already done)
        # A new transfer into the slot the node does not run.
        self._close()
        root = self.root
        slot = "b" if node.slot_state.get("slot", "a") == "a" else "a"
        spath = root + "slots.json"
        try:
            slots = store.read(spath) or {}
        except store.CorruptRecord:
            slots = {}
        if slots.get("pending") == slot or slots.get("previous") == slot:
            # the slot is about to be overwritten: it is nobody's staged image or fallback now
            slots["pending"] = None
            if slots.get("previous") == slot:
                slots["previous"] = None
            store.write(spath, slots)
        try:
            os.remove(node.data_dir + "trust.next")   # belongs to an earlier image
        except OSError:
            pass
        _wipe(root + slot)
        store.makedirs(root + slot)
        self.rec = {"state": otadef.RECEIVING, "reason": 0, "v": version, "id": ident,
                    "size": size, "cb": cb, "n": n, "slot": slot, "tries": 0, "next": 0,
                    "rx": 0, "ph": 0, "hdr": "", "path": None, "fsize": 0, "left": 0}
        self.ph = self.hn = self.left = 0
        self._last_crc = -1
        store.write(self.path, self.rec)
        node.show_ota(self.rec)
        return 0

    def _control(self, value):
        rec = self.rec
        state = rec.get("state")
        if value == otadef.COMMIT:
            if state == otadef.STAGED:
                return 0
            if state == otadef.VERIFY_PENDING:
                self.node.reboot_pending = True
                return 0
            if state != otadef.RECEIVING or rec["next"] != rec["n"] or self.ph != 3:
                return 3
            self._close()
            rec["state"] = otadef.VERIFY_PENDING
            rec["tries"] = 0
            store.write(self.path, rec)
            self.node.show_ota(rec)
            self.node.reboot_pending = True   # after the answer; main.py verifies the slot
            return 0
        if value == otadef.ABORT:
            self._close()
            if state in (otadef.RECEIVING, otadef.VERIFY_PENDING):
                rec["state"] = otadef.IDLE
                store.write(self.path, rec)
                self.node.show_ota(rec)
            return 0
        return 3

    def _chunk(self, count, f, at):
        rec = self.rec
        if rec.get("state") != otadef.RECEIVING:
            return 4
        index = (f[at] << 8) | f[at + 1]
        n = rec["n"]
        if index >= n:
            return 2
        cb = rec["cb"]
        length = cb if index < n - 1 else rec["size"] - index * cb
        words = (length + 1) // 2
        if count != words + 2:
            return 3
        end = at + 2 + 2 * words
        crc = (f[end] << 8) | f[end + 1]
        mv = memoryview(f)[at:at + 2 + length]
        if crc16(mv) != crc:
            return 3
        nxt = rec["next"]
        if index != nxt:
            if index == nxt - 1 and crc == self._last_crc:
                return 0   # a retry of the last chunk whose answer was lost
            return 2
        if not self._feed(mv[2:]):
            self._refuse(MALFORMED)
            return 4
        nxt += 1
        rec["next"] = nxt
        rec["rx"] += length
        self._last_crc = crc
        if nxt == n and self.ph != 3:
            self._refuse(MALFORMED)   # the stream ended inside an entry
            return 4
        if nxt % CHECKPOINT == 0 or nxt == n:
            self._checkpoint()
        self.node.show_ota(rec)
        return 0

    # -- the stream parser ----------------------------------------------------------------
    def _open(self, create):
        rec = self.rec
        full = self.root + rec["slot"] + "/" + rec["path"]
        if create:
            store.makedirs(full[:full.rfind("/")])
            self._fh = open(full, "wb")
        else:   # resuming inside this file: overwrite from the checkpoint's offset
            self._fh = open(full, "r+b")
            self._fh.seek(rec["fsize"] - self.left)

    def _feed(self, data):
        """Unpack data into the slot; False when the stream is malformed."""
        i = 0
        n = len(data)
        hdr = self.hdr
        while i < n:
            ph = self.ph
            if ph == 2:
                if self._fh is None:
                    self._open(False)
                k = self.left if self.left < n - i else n - i
                self._fh.write(data[i:i + k])
                i += k
                self.left -= k
                if not self.left:
                    self._close()
                    self.ph = 1
                continue
            if ph == 3:
                return False   # bytes after the end marker
            hdr[self.hn] = data[i]
            self.hn += 1
            i += 1
            if ph == 0:
                if self.hn == 4:
                    if hdr[:4] != _MAGIC:
                        return False
                    self.hn = 0
                    self.ph = 1
            elif hdr[0] == 0:
                self.hn = 0
                self.ph = 3
            elif self.hn == hdr[0] + 5:
                try:
                    path = bytes(hdr[1:self.hn - 4]).decode()
                except UnicodeError:
                    return False
                if not _safe(path):
                    return False
                size = (hdr[self.hn - 4] << 24) | (hdr[self.hn - 3] << 16) | \
                    (hdr[self.hn - 2] << 8) | hdr[self.hn - 1]
                self.hn = 0
                rec = self.rec
                rec["path"] = path
                rec["fsize"] = size
                self.left = size
                self._open(True)
                if size:
                    self.ph = 2
                else:
                    self._close()
        return True
