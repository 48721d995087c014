# The device's own check of an image received over the air, run by main.py at the boot after a
# commit, before any application code: the heap is all free (app.ota_verify with the pure
# Ed25519 and SHA-512 costs about 20 KB, which a running node does not have).
#
# This module is loaded from the slot the node RUNS (verified code), never from the slot it
# fills. The steps, each ending in an atomic write, so that a power cut anywhere leaves the old
# state and main.py simply runs this again (everything here is idempotent):
#   1. the target slot stops being anyone's fallback or staged image (slot record);
#   2. the stream the receiver stored (/data/ota.img, app/ota_rx.py) is unpacked into the
#      target slot, emptied first; a stream that does not parse, or a path that would leave
#      the slot, is refused as malformed;
#   3. the slot's manifest.json and manifest.sig are checked against the device's trust
#      (/data/trust.json: keys and anti-rollback floor) for its class and board, then the size
#      and SHA-256 of every file; a file the manifest does not name is refused too;
#   4. staged: the trust the release brings (floor, rotated keys) waits in /data/trust.next
#      until the slot runs confirmed (the picker adopts it then: /picker.py adopt_trust), the
#      slot record gets "pending" (the picker boots it as a trial next), the transfer record
#      says staged;
#      refused: the transfer record says refused with its reason (contracts/release.py
#      REASONS), readable in ota_reason; the old image keeps running.
#
# The board's watchdog (8 s on an ESP32, started by main.py before the picker runs) keeps
# running through all of this, and a check takes long on a board: unpacking ~200 KB into
# LittleFS, then a pure-Python Ed25519 and the SHA-256 of every file. So the check feeds it
# (the wdt main.py hands to picker.boot) after every file it wipes, every block it unpacks
# (512 B) or hashes (1 KB, app/ota_verify.py) and every 16 steps of the Ed25519 loop: no span
# between two feeds grows with the image. A check that hangs
# (a flash that never answers) still stops feeding and is reset, and the picker's try count
# refuses the image after 3 such boots.
import json
import os

import record as store
from app import ota_verify, otadef

_DIR = 0x4000
_MAGIC = b"EFI1"


def _read(path):
    with open(path, "rb") as fh:
        return fh.read()


def _extra(root, rel, named):
    """A file under root/rel that the manifest does not name, or None."""
    for entry in os.ilistdir(root + rel):
        path = rel + "/" + entry[0]
        if entry[1] == 0x4000:
            found = _extra(root, path, named)
            if found:
                return found
        elif path not in named:
            return path
    return None


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(value, fh)
    os.rename(tmp, path)


def _nothing():
    pass


def _wipe(path, feed=_nothing):
    """Remove a directory's contents (a symlink is unlinked, never followed)."""
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for entry in entries:
        full = path + "/" + entry[0]
        if entry[1] == _DIR:
            _wipe(full, feed)
            os.rmdir(full)
        else:
            os.remove(full)
        feed()


def _safe(path):
    if path not in ("manifest.json", "manifest.sig") and path[:4] != "app/":
        return False
    if "\\" in path or "\x00" in path:
        return False
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


def unpack(image, sroot, feed=_nothing):
    """Write the stream's entries (hardware/ota_image.py) under sroot; Refused(MALFORMED).
    feed() (the watchdog's) after every block written."""
    buf = bytearray(512)
    with open(image, "rb") as fh:
        if fh.read(4) != _MAGIC:
            raise ota_verify.Refused(ota_verify.MALFORMED, "not an image stream")
        seen = []
        while True:
            head = fh.read(1)
            if not head:
                raise ota_verify.Refused(ota_verify.MALFORMED, "the stream ends early")
            if head[0] == 0:
                break
            raw = fh.read(head[0] + 4)
            if len(raw) != head[0] + 4:
                raise ota_verify.Refused(ota_verify.MALFORMED, "the stream ends early")
            try:
                path = raw[:-4].decode()
            except UnicodeError:
                path = ""
            if not _safe(path) or path in seen:
                raise ota_verify.Refused(ota_verify.MALFORMED, "bad entry path " + repr(path))
            seen.append(path)
            left = (raw[-4] << 24) | (raw[-3] << 16) | (raw[-2] << 8) | raw[-1]
            full = sroot + path
            store.makedirs(full[:full.rfind("/")])
            mv = memoryview(buf)
            with open(full, "wb") as out:
                while left:
                    n = fh.readinto(mv[:left] if left < len(buf) else mv)
                    if not n:
                        raise ota_verify.Refused(ota_verify.MALFORMED, path + " is cut short")
                    out.write(mv[:n])
                    left -= n
                    feed()
        if fh.read(1):
            raise ota_verify.Refused(ota_verify.MALFORMED, "bytes after the end of the stream")


def _finish(root, rec, state, reason):
    regs = rec["regs"]
    regs[0] = state
    regs[4] = reason
    store.write(root + "data/ota.json", rec)
    try:
        os.remove(root + "data/ota.img")   # the slot holds the image now, or it was refused
    except OSError:
        pass


def run(root, rec, wdt=None):
    """Verify the slot the transfer record names; True when it was staged. wdt: the running
    watchdog (main.py's, through picker.boot), fed all along; None (a picker that does not
    pass it, a bare REPL session): nothing to feed."""
    feed = wdt.feed if wdt is not None else _nothing
    slot = rec["slot"]
    sroot = root + slot + "/"
    with open(root + "data/node.json") as fh:
        cfg = json.load(fh)
    spath = root + "slots.json"
    try:
        slots = store.read(spath) or {}
    except store.CorruptRecord:
        slots = {}
    if slots.get("pending") == slot or slots.get("previous") == slot:
        slots["pending"] = None   # the slot is being overwritten: nobody's image now
        if slots.get("previous") == slot:
            slots["previous"] = None
        store.write(spath, slots)
    try:
        os.remove(root + "data/trust.next")   # an earlier image's
    except OSError:
        pass
    feed()
    _wipe(root + slot, feed)
    store.makedirs(root + slot)
    try:
        unpack(root + "data/ota.img", sroot, feed)
        try:
            with open(root + "data/trust.json") as fh:
                trust = json.load(fh)
        except OSError:
            raise ota_verify.Refused(ota_verify.UNKNOWN_KEY, "this device trusts no key")
        try:
            manifest = _read(sroot + "manifest.json")
            sig = _read(sroot + "manifest.sig")
        except OSError:
            raise ota_verify.Refused(ota_verify.MALFORMED, "no manifest in the slot")
        body = ota_verify.verify_slot(sroot, manifest, sig, trust, cfg.get("class"),
                                      cfg.get("board"), feed)
        extra = _extra(sroot, "app", body["files"])
        if extra:
            raise ota_verify.Refused(ota_verify.MALFORMED, extra + " is not in the manifest")
        accepted = ota_verify.accept(trust, body)
    except ota_verify.Refused as exc:
        print("ota: slot %s refused: %s" % (slot, exc))
        _finish(root, rec, otadef.REFUSED, exc.code)
        return False
    feed()
    _write_json(root + "data/trust.next", {"slot": slot, "trust": accepted})
    slots["pending"] = slot
    slots["rolled_back"] = False
    if slots.get("active") not in ("a", "b"):
        slots["active"] = "b" if slot == "a" else "a"
    store.write(spath, slots)
    regs = rec["regs"]
    regs[5], regs[6], regs[7] = body["version"]
    _finish(root, rec, otadef.STAGED, 0)
    print("ota: slot %s verified, version %d.%d.%d staged" % ((slot,) + tuple(body["version"])))
    return True
