# The slot picker's logic: read /slots.json (whatever it holds), decide which application slot
# this boot runs, write the record back. main.py imports it, calls boot(), and unloads it before
# the application is imported, so none of this stays in the heap while the node runs.
#
# The record (the CRC'd atomic format of /record.py):
#   {"active": "a", "previous": "b", "trial": false, "tries": 0, "pending": null,
#    "rolled_back": false}
# The update sequence is a small state machine, reported in the node's status word:
#   1. an installer writes the new image into the inactive slot and sets "pending" to it
#      (status bit ota: an update is staged and waits for the reboot that starts it);
#   2. at the next boot the picker makes the pending slot active as a trial (status bit trial);
#      the trial gets MAX_TRIES boots to be confirmed (holding register 0 = 4, sent by the
#      gateway once the node answers; the application clears "trial" in the record);
#   3. an unconfirmed trial, a trial that raises (main.py resets the board, so the count
#      advances), hangs (the watchdog resets it) or runs past its confirm-by time unconfirmed
#      (app/node.py resets it), or a missing/empty slot rolls back to the previous slot (status
#      bit rolled_back, until the next update is staged).
# Like main.py and record.py this file sits at the root of the flash and never changes in an
# update.

import os
import sys

import record

MAX_TRIES = 3
SLOT_NAMES = ("a", "b")
OTA_VERIFY_PENDING, OTA_REFUSED = 2, 4  # app/otadef.py (generated from common.toml [ota])
OTA_TRIES = 3  # boots a check of a received image may take (each power cut during it is one)
EXIT_REBOOT = 75  # unix port: a reset on purpose (the simulator's supervisor restarts us)


def clean(stored):
    """Any value at all -> a well-typed slot record (unknown or mistyped fields default)."""
    slots = {"active": "a", "previous": None, "trial": False, "tries": 0, "pending": None,
             "rolled_back": False}
    if not isinstance(stored, dict):
        return slots
    for key in ("active", "previous", "pending"):
        value = stored.get(key)
        if value in SLOT_NAMES or (value is None and key != "active"):
            slots[key] = value
    for key in ("trial", "rolled_back"):
        if isinstance(stored.get(key), bool):
            slots[key] = stored[key]
    tries = stored.get("tries")
    if isinstance(tries, int) and not isinstance(tries, bool) and 0 <= tries < 1000:
        slots["tries"] = tries
    return slots


def load(path):
    try:
        return clean(record.read(path))
    except record.CorruptRecord:
        pass
    try:  # the first releases wrote plain JSON without a CRC line: keep their slot choice
        import json
        with open(path) as fh:
            return clean(json.load(fh))
    except Exception:  # noqa: BLE001 - whatever the bytes, the picker must pick
        return clean(None)


def slot_ok(root, name):
    """A slot holds an image: its node module exists and is not empty."""
    for leaf in ("node.mpy", "node.py"):
        try:
            if os.stat(root + name + "/app/" + leaf)[6] > 0:
                return True
        except OSError:
            pass
    return False


def _roll_back(slots):
    return {"active": slots["previous"], "previous": slots["active"], "trial": False,
            "tries": 0, "pending": None, "rolled_back": True}


def choose(slots, ok):
    """The record for this boot, from the stored one; ok(slot) says whether a slot holds an
    image (no I/O here: table-tested in tests/firmware/mp_unit/test_slots.py)."""
    slots = dict(slots)
    pending = slots["pending"]
    if pending is not None:
        if pending != slots["active"] and ok(pending):
            slots = {"active": pending, "previous": slots["active"], "trial": True, "tries": 0,
                     "pending": None, "rolled_back": False}
        else:
            slots["pending"] = None  # a staged image that is not there: forget it
    previous = slots["previous"]
    can_fall_back = previous is not None and previous != slots["active"] and ok(previous)
    if slots["trial"]:
        slots["tries"] += 1
        if can_fall_back and (slots["tries"] > MAX_TRIES or not ok(slots["active"])):
            slots = _roll_back(slots)  # the trial never confirmed itself, or is not there
    elif can_fall_back and not ok(slots["active"]):
        slots = _roll_back(slots)
    return slots


def ota_check(root, wdt=None):
    """An image received over the air and committed (app/ota_rx.py) waits for the device's own
    check: run it now, before any application code (the whole heap is free), with the verifier
    of the slot that runs, then reset the board. Nothing pending: return at once.

    The check (app/ota_boot.py) either stages the slot (the next boot is its trial) or records
    why it was refused. Here, not in main.py: this code leaves the heap with the picker. A check
    that cannot finish (power cuts, a verifier that raises) is tried OTA_TRIES times, then
    refused as malformed: the node always comes back up. wdt (main.py's watchdog) is fed by
    the check all along: on a board the unpacking and the pure-Python verifier take long."""
    path = root + "data/ota.json"
    try:
        rec = record.read(path)
    except record.CorruptRecord:
        return
    regs = rec.get("regs") if rec else None
    if not regs or regs[0] != OTA_VERIFY_PENDING:
        return
    running = load(root + "slots.json")["active"]
    tries = rec.get("tries", 0)
    rec["tries"] = tries + 1
    if tries >= OTA_TRIES or rec.get("slot") not in SLOT_NAMES or rec["slot"] == running:
        regs[0] = OTA_REFUSED
        regs[4] = 1  # malformed
        record.write(path, rec)
        return
    record.write(path, rec)
    sys.path.insert(0, root + running)
    from app import ota_boot

    ota_boot.run(root, rec, wdt)
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):
        pass
    sys.exit(EXIT_REBOOT)  # the next boot starts clean: the picker, then the (trial) image


def adopt_trust(root):
    """The trust a release verified over the air brings (anti-rollback floor, rotated keys) is
    left by app/ota_boot.py in /data/trust.next as {"slot", "trust"}; it becomes the device's
    (/data/trust.json) once that slot runs confirmed, and is dropped if the slot no longer
    runs (its trial rolled back). At every boot before any check of a new image, so a
    release is always checked against the trust of the last confirmed one."""
    import json

    path = root + "data/trust.next"
    try:
        with open(path) as fh:
            pending = json.load(fh)
    except Exception:  # noqa: BLE001 - none (the usual case), or torn: nothing to adopt
        return
    slots = load(root + "slots.json")
    slot = pending.get("slot")
    if slots["pending"] == slot or slots["active"] == slot and slots["trial"]:
        return  # staged or on trial: not confirmed yet
    if slots["active"] == slot:
        tmp = root + "data/trust.json.tmp"
        with open(tmp, "w") as fh:
            json.dump(pending["trust"], fh)
        os.rename(tmp, root + "data/trust.json")
    os.remove(path)


def boot(root, wdt=None):
    """Adopt confirmed trust, run a pending OTA check (it resets the board; it feeds wdt, the
    running watchdog), then pick the slot for this boot and save the record; returns the
    slot's name."""
    try:
        adopt_trust(root)
    except OSError:
        pass  # a failing flash must not stop the boot; the next boot tries again
    ota_check(root, wdt)
    path = root + "slots.json"
    stored = load(path)
    slots = choose(stored, lambda name: slot_ok(root, name))
    try:
        # Written at every boot (like the boot counter): a damaged or old-format record is
        # replaced at once, so the application reads it back in the one format.
        record.write(path, slots)
    except OSError:
        pass  # a failing flash must not stop the boot; the picker works from memory
    return slots["active"]
