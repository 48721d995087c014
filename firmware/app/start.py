# The boot-only half of the node (app/node.py): the node's identity, the HAL, the stored
# thresholds, the boot counter, the OTA window's input block. node.main() imports it and drops
# it before the loop runs, so none of this code is in the heap while the node works (a running
# node keeps about 5 KB free under the 64 KB cap, for the OTA receiver's code).
import json
from array import array

import record as store
from app import hwdef


def make(root, slot_state, node_class):
    """The Node, from data/node.json (written by the technician's provisioning tool or the
    simulator): {"class": "fire", "address": 1, "baud": 19200, "board": "...", "uart": ...};
    an optional "trial_confirm_s" shortens or lengthens a trial's confirm-by time."""
    from app import hal as hal_mod

    with open(root + "data/node.json") as fh:
        node_cfg = json.load(fh)
    hal = hal_mod.make(root, node_cfg, (slot_state or {}).get("wdt"))
    slot_state = dict(slot_state or {})
    confirm_s = node_cfg.get("trial_confirm_s")  # the trial's confirm-by time (node.py); 0: none
    if isinstance(confirm_s, int) and not isinstance(confirm_s, bool) and confirm_s >= 0:
        slot_state["confirm_s"] = confirm_s
    return node_class(hal, node_cfg.get("class", "fire"), node_cfg.get("address", 1),
                      slot_state)


def load_config(node):
    """Stored thresholds into the bank; a damaged record or skipped values: config_error."""
    try:
        stored = store.read(node._config_path)
    except store.CorruptRecord:
        node.config_error = True  # run on factory thresholds and say so in status bit 6
        return
    if stored and stored.get("class") == node.bank.class_name:
        if node.bank.apply_config(stored.get("holding", {})):
            node.config_error = True


def count_boot(data_dir):
    path = data_dir + "boot.json"
    try:
        record = store.read(path) or {}
    except store.CorruptRecord:
        record = {}
    count = record.get("boots", 0) + 1
    try:
        store.write(path, {"boots": count})
    except OSError:
        pass  # a full or failing flash must not stop the node from booting
    return count


def ota_inputs(data_dir):
    """The OTA input block: the transfer record's "regs" (app/ota_rx.py), else zeros."""
    try:
        regs = store.read(data_dir + "ota.json")["regs"]
        if len(regs) == hwdef.OTA_INPUTS:
            return array("H", regs)
    except Exception:  # noqa: BLE001 - none, or damaged: no transfer (an offer starts over)
        pass
    return array("H", [0] * hwdef.OTA_INPUTS)
