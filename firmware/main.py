# Slot picker: choose which application image to start, then hand over to it.
#
# The device keeps two application slots, /a/app and /b/app, and a record /slots.json:
#   {"active": "a", "previous": "b", "trial": false, "tries": 0}
# A freshly installed image starts as a trial: it gets MAX_TRIES boots to confirm itself (holding
# register 0 = 4, sent by the gateway once the node answers), after which the picker rolls back
# to the previous slot. This file never changes in an update; only the slots do.
import gc
import os
import sys

# Collect after every 4 KB allocated from the very first import: without it garbage from
# loading modules piles up to the heap's end and fragments it before the node even starts.
gc.threshold(4096)

MAX_TRIES = 3
ROOT = os.getenv("EF_ROOT") if hasattr(os, "getenv") else None
ROOT = (ROOT.rstrip("/") + "/") if ROOT else "/"


def _load_slots():
    try:
        import json
        with open(ROOT + "slots.json") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {"active": "a", "previous": None, "trial": False, "tries": 0}


def _save_slots(slots):
    import json
    tmp = ROOT + "slots.json.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(slots))
    os.rename(tmp, ROOT + "slots.json")


def pick():
    slots = _load_slots()
    if slots.get("trial"):
        slots["tries"] = slots.get("tries", 0) + 1
        if slots["tries"] > MAX_TRIES and slots.get("previous"):
            # The trial image never confirmed itself: roll back.
            slots = {"active": slots["previous"], "previous": slots["active"],
                     "trial": False, "tries": 0, "rolled_back": True}
        _save_slots(slots)
    return slots


def confirm():
    slots = _load_slots()
    slots["trial"] = False
    slots["tries"] = 0
    _save_slots(slots)


def start():
    slots = pick()
    sys.path.insert(0, ROOT + slots["active"])
    from app import node

    node.main(ROOT, {"trial": slots.get("trial", False), "confirm": confirm,
                     "slot": slots["active"]})


start()
