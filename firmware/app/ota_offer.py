# An offer written into the OTA window (common.toml [ota] ota_offer): start a transfer, or
# resume the same one. Imported by the node for one offer and unloaded after it, so its code
# never shares the heap with the receiver's (app/ota_rx.py, whose header describes the
# record); a running fire or air node has about 5 KB of heap to spare (docs/firmware-boot.md).
import binascii

import record as store
from micropython import const

_OFFER_WORDS = const(23)
_MAX_CHUNK = const(240)
_RECEIVING = const(1)
_VERIFY_PENDING = const(2)
_STAGED = const(3)


def offer(node, count, f, at):
    """0, or the Modbus exception code for the offer in f[at:] (count words)."""
    if count != _OFFER_WORDS:
        return 3
    size = (f[at + 6] << 24) | (f[at + 7] << 16) | (f[at + 8] << 8) | f[at + 9]
    cb = (f[at + 10] << 8) | f[at + 11]
    n = (f[at + 12] << 8) | f[at + 13]
    if not size or cb < 2 or cb > _MAX_CHUNK or cb & 1 or n != (size + cb - 1) // cb:
        return 3
    regs = node.ota_inputs
    ident = binascii.hexlify(f[at:at + 46]).decode()   # version, sizes, SHA-256: the image
    path = node.data_dir + "ota.json"
    try:
        rec = store.read(path) or {}
    except store.CorruptRecord:
        rec = {}
    if rec.get("id") == ident and regs[0] in (_RECEIVING, _VERIFY_PENDING, _STAGED):
        return 0   # the same image again: the receiver resumes where the record says
    if node.slot_flags.get("trial"):
        return 6   # busy: the running trial image must be confirmed (or roll back) first
    open(node.data_dir + "ota.img", "wb").close()
    for i in range(8):
        regs[i] = f[at + 2 * i - 10] << 8 | f[at + 2 * i - 9] if i > 4 else 0
    regs[0] = _RECEIVING
    store.write(path, {"id": ident, "size": size, "cb": cb, "n": n, "tries": 0,
                       "slot": "b" if node.slot_state.get("slot", "a") == "a" else "a",
                       "regs": list(regs)})
    return 0
