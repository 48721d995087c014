# The device's own check of an image received over the air, run by main.py at the boot after a
# commit, before any application code: the heap is all free for the verifier (app.ota_verify
# with the pure Ed25519 and SHA-512 costs about 20 KB, which a running node does not have).
#
# This module is loaded from the slot the node RUNS (verified code), never from the slot it
# checks. It reads the slot's manifest.json and manifest.sig, checks them against the device's
# trust (/data/trust.json: keys and anti-rollback floor) for its class and board, then the size
# and SHA-256 of every file, and refuses any file in the slot's app/ that the manifest does not
# name. Then either:
#   - staged: the trust the release brings (floor, rotated keys) is left in /data/trust.next for
#     the gateway's confirm of the trial (app/node.py), the slot record gets "pending" (the slot
#     picker boots it as a trial next), the transfer record says staged;
#   - refused: the transfer record says refused with the reason code (contracts/release.py
#     REASONS), readable in ota_reason; the slots are left as they were: the old image runs.
# Each step is an atomic record write, in an order where a power cut at any point leaves either
# the old state (main.py runs this again: it is idempotent) or the new one.
import json
import os

import record as store
from app import ota_verify, otadef


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


def run(root, rec):
    """Verify the slot the transfer record names; True when it was staged."""
    path = root + "data/ota.json"
    slot = rec["slot"]
    sroot = root + slot + "/"
    with open(root + "data/node.json") as fh:
        cfg = json.load(fh)
    try:
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
                                      cfg.get("board"))
        extra = _extra(sroot, "app", body["files"])
        if extra:
            raise ota_verify.Refused(ota_verify.MALFORMED, extra + " is not in the manifest")
        accepted = ota_verify.accept(trust, body)
    except ota_verify.Refused as exc:
        print("ota: slot %s refused: %s" % (slot, exc))
        rec["state"] = otadef.REFUSED
        rec["reason"] = exc.code
        store.write(path, rec)
        return False
    _write_json(root + "data/trust.next", accepted)
    spath = root + "slots.json"
    try:
        slots = store.read(spath) or {}
    except store.CorruptRecord:
        slots = {}
    slots["pending"] = slot
    slots["rolled_back"] = False
    if slots.get("active") not in ("a", "b"):
        slots["active"] = "b" if slot == "a" else "a"
    store.write(spath, slots)
    rec["state"] = otadef.STAGED
    rec["reason"] = 0
    rec["v"] = list(body["version"])
    store.write(path, rec)
    print("ota: slot %s verified, version %d.%d.%d staged" % ((slot,) + tuple(body["version"])))
    return True
