# The device's own check of a firmware release before it may boot: the Ed25519 signature of the
# manifest, a trusted and unrevoked key, the anti-rollback floor, this device's class and board,
# and the size and SHA-256 of every file in the new slot.
#
# The same rules as contracts/release.py (its docstring is the specification: format, signing
# message, order of the checks, key rotation); this is their MicroPython form, and a test feeds
# it releases built by provisioning/release.py. The refusal reasons are numbered here as in
# contracts.release.REASONS (a test holds the two tables equal); a Modbus register will expose
# the last one.
#
# The trust the device keeps (trust.json, written by `edgefleet flash`, updated by accept()):
#   {"keys": {"version": 1, "keys": {"<keyid>": "<public key hex>"}, "revoked": []},
#    "floor": [1, 0, 0]}
import binascii
import hashlib
import json

from app import ed25519

OK = 0
MALFORMED = 1
BAD_SIGNATURE = 2
UNKNOWN_KEY = 3
REVOKED_KEY = 4
DOWNGRADE = 5
BAD_HASH = 6
BAD_SIZE = 7
WRONG_TARGET = 8

REASONS = {
    OK: "ok",
    MALFORMED: "malformed",
    BAD_SIGNATURE: "bad signature",
    UNKNOWN_KEY: "unknown key",
    REVOKED_KEY: "revoked key",
    DOWNGRADE: "downgrade",
    BAD_HASH: "bad hash",
    BAD_SIZE: "bad size",
    WRONG_TARGET: "wrong class or board",
}

PREFIX = b"edgefleet-rel1:"
TYPE = "edgefleet-release"
CHUNK = 1024   # file hashing buffer: small, the heap is small
_FIELDS = ("v", "type", "version", "min_version", "class", "board", "keyid", "files")


class Refused(Exception):
    def __init__(self, code, detail):
        super().__init__(REASONS[code] + ": " + detail)
        self.code = code
        self.detail = detail


def _hex(b):
    return binascii.hexlify(b).decode()


def _version(value, name):
    if not (isinstance(value, list) and len(value) == 3):
        raise Refused(MALFORMED, name + " must be [major, minor, patch]")
    for v in value:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 65535:
            raise Refused(MALFORMED, name + " parts must be 0-65535")
    return (value[0], value[1], value[2])


def _safe_path(path):
    if not path or path[0] == "/" or "\\" in path or "\x00" in path:
        return False
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return False
    return True


def _keyset(data):
    # the JSON form of a key set -> (version, {keyid: public bytes}, revoked list)
    if not isinstance(data, dict) or sorted(data) != ["keys", "revoked", "version"]:
        raise Refused(MALFORMED, "a key set is {version, keys, revoked}")
    version, keys, revoked = data["version"], data["keys"], data["revoked"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise Refused(MALFORMED, "key set version must be a positive integer")
    if not isinstance(keys, dict) or not isinstance(revoked, list):
        raise Refused(MALFORMED, "key set keys must be an object and revoked a list")
    parsed = {}
    for kid in keys:
        pub = keys[kid]
        try:
            raw = binascii.unhexlify(pub)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 32 or _hex(hashlib.sha256(raw).digest())[:16] != kid:
            raise Refused(MALFORMED, "key " + str(kid) + ": not a public key with that id")
        if kid not in revoked:
            parsed[kid] = raw
    if not parsed:
        raise Refused(MALFORMED, "a key set must keep at least one key that is not revoked")
    return version, parsed, revoked


def _parse_signature(sig_bytes):
    try:
        env = json.loads(sig_bytes)
        kid, sig = env["keyid"], env["sig"]
        if sorted(env) != ["keyid", "sig"] or len(kid) != 16 or len(sig) != 128:
            raise ValueError
        return kid, binascii.unhexlify(sig)
    except (ValueError, TypeError, KeyError):
        raise Refused(MALFORMED, "manifest.sig must be {keyid: 16 hex, sig: 128 hex}")


def _parse_manifest(data):
    try:
        body = json.loads(data)
    except ValueError:
        raise Refused(MALFORMED, "manifest is not JSON")
    if not isinstance(body, dict):
        raise Refused(MALFORMED, "manifest is not a JSON object")
    for name in _FIELDS:
        if name not in body:
            raise Refused(MALFORMED, "manifest lacks " + name)
    for name in body:
        if name not in _FIELDS and name != "trust":
            raise Refused(MALFORMED, "manifest has an unknown field " + name)
    if body["v"] != 1 or body["type"] != TYPE:
        raise Refused(MALFORMED, "not an edgefleet-release v1 manifest")
    version = _version(body["version"], "version")
    floor = _version(body["min_version"], "min_version")
    if floor > version:
        raise Refused(MALFORMED, "min_version is above version")
    for name in ("class", "board", "keyid"):
        if not isinstance(body[name], str) or not body[name]:
            raise Refused(MALFORMED, name + " must be a non-empty string")
    files = body["files"]
    if not isinstance(files, dict) or not files:
        raise Refused(MALFORMED, "files must name at least one file")
    for path in files:
        e = files[path]
        if not _safe_path(path):
            raise Refused(MALFORMED, "file path " + path + " must be relative, no . or ..")
        if not (isinstance(e, dict) and sorted(e) == ["sha256", "size"]
                and isinstance(e["size"], int) and e["size"] >= 0
                and isinstance(e["sha256"], str) and len(e["sha256"]) == 64):
            raise Refused(MALFORMED, "file " + path + ": entry must be {size, sha256}")
    body["version"] = version
    body["min_version"] = floor
    if "trust" in body:
        body["trust"] = _keyset(body["trust"])
    return body


def _rotated(current, new):
    # (version, keys, revoked) after a carried key set: newer only; revocations accumulate
    if new[0] <= current[0]:
        return current
    revoked = list(current[2])
    for kid in new[2]:
        if kid not in revoked:
            revoked.append(kid)
    keys = {}
    for kid in new[1]:
        if kid not in revoked:
            keys[kid] = new[1][kid]
    return new[0], keys, revoked


def load_trust(trust):
    """trust.json's dict -> (keyset tuple, floor tuple)."""
    return _keyset(trust["keys"]), _version(trust["floor"], "floor")


def verify_manifest(manifest_bytes, sig_bytes, trust, device_class=None, board=None,
                    feed=None):
    """The manifest body (a dict) if the release may be installed, else Refused(code); feed
    (a watchdog's) is called during the signature check."""
    keys, floor = load_trust(trust)
    kid, sig = _parse_signature(sig_bytes)
    if kid in keys[2]:
        raise Refused(REVOKED_KEY, "key " + kid + " was revoked")
    public = keys[1].get(kid)
    if public is None:
        raise Refused(UNKNOWN_KEY, "key " + kid + " is not trusted")
    message = PREFIX + hashlib.sha256(manifest_bytes).digest()
    if not ed25519.verify(public, message, sig, feed):
        raise Refused(BAD_SIGNATURE, "the manifest does not verify under key " + kid)
    body = _parse_manifest(manifest_bytes)
    if body["keyid"] != kid:
        raise Refused(BAD_SIGNATURE, "manifest names another key than its signer")
    if device_class is not None and body["class"] != device_class:
        raise Refused(WRONG_TARGET, "release for class " + body["class"])
    if board is not None and body["board"] != board:
        raise Refused(WRONG_TARGET, "release for board " + body["board"])
    if body["version"] < floor:
        raise Refused(DOWNGRADE, "version below the anti-rollback floor")
    if "trust" in body and not _rotated(keys, body["trust"])[1]:
        raise Refused(MALFORMED, "the carried key set keeps no key that is not revoked")
    return body


def check_file(body, path, size, sha256_hex):
    """One file as found in the slot (size None: absent); Refused(BAD_SIZE / BAD_HASH)."""
    entry = body["files"].get(path)
    if entry is None:
        raise Refused(MALFORMED, path + " is not in the manifest")
    if size != entry["size"]:
        raise Refused(BAD_SIZE, path + ": size differs from the manifest")
    if sha256_hex != entry["sha256"]:
        raise Refused(BAD_HASH, path + ": SHA-256 differs from the manifest")


def _nothing():
    pass


def hash_file(path, buf=None, feed=_nothing):
    """(size, SHA-256 hex) of a file read in CHUNK pieces, or (None, "") when it is absent;
    feed() (the watchdog's) is called after every piece."""
    buf = buf or bytearray(CHUNK)
    mv = memoryview(buf)
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
                size += n
                feed()
    except OSError:
        return None, ""
    return size, _hex(h.digest())


def verify_slot(root, manifest_bytes, sig_bytes, trust, device_class=None, board=None,
                feed=_nothing):
    """The whole check of a slot directory holding the release's files; the manifest body.

    feed() is the watchdog's (app/ota_boot.py passes it): called before and after the
    signature check (a pure-Python Ed25519 verify: 7-25 ms on the unix port, 50-200x that on
    an ESP32; it feeds inside its loop too) and after every CHUNK of every file hashed, so a
    check of any size never starves the watchdog."""
    feed()
    body = verify_manifest(manifest_bytes, sig_bytes, trust, device_class, board, feed)
    feed()
    buf = bytearray(CHUNK)
    root = root.rstrip("/") + "/"
    for path in sorted(body["files"]):
        size, digest = hash_file(root + path, buf, feed)
        check_file(body, path, size, digest)
    return body


def accept(trust, body):
    """The trust dict after a verified release is confirmed: floor raised, key set rotated.

    Store it when the trial image is confirmed, not when it is written to the slot: until then
    the device may fall back to its old slot, which must still be within the floor."""
    keys, floor = load_trust(trust)
    if "trust" in body:
        keys = _rotated(keys, body["trust"])
    floor = max(floor, body["min_version"])
    return {
        "keys": {"version": keys[0],
                 "keys": dict((k, _hex(v)) for k, v in keys[1].items()),
                 "revoked": sorted(keys[2])},
        "floor": list(floor),
    }
