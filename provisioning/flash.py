"""The technician's flashing tool: put a verified release, the node's identity and configuration
and the release trust keys onto a MicroPython board through mpremote, then read them back.

Two halves. :func:`plan` is pure (given the files it reads): it verifies the release for this
node's class and board with :mod:`contracts.release` and returns every file to write, by its
path on the board, in order. :func:`write` is the I/O: an mpremote serial transport, one
progress bar per file, and a read-back of each file (SHA-256 computed by the board's own
``hashlib`` over what it reads from flash, compared with what was sent).

What a node holds after flashing (the layout firmware/main.py and app.node read)::

    boot.py, main.py        the slot picker (never changed by an update)
    slots.json              slot a active, no trial
    a/app/...               the application from the release (.mpy)
    a/manifest.json, .sig   the release's manifest, so the node can check its own slot
    data/node.json          identity: device id, class, Modbus address, baud, board (+ extra)
    data/config.json        thresholds as a store record (CRC line + JSON), when any are given
    data/trust.json         release trust: key set and anti-rollback floor (app.ota_verify)

Paths are relative: on a board the working directory is the flash root, and on the MicroPython
unix port (the tests) it is the directory the port runs in.
The base MicroPython image on a blank ESP32 is written with esptool, not by this tool
(docs/provisioning.md).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contracts.release import KeySet, ReleaseVerifier
from hardware.regmap import load_maps
from provisioning.release import verify

__all__ = ["FlashError", "NodeIdentity", "plan", "thresholds_record", "write"]

log = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
CHUNK = 512


class FlashError(Exception):
    """A refused or failed flashing; the message names the file or the value."""


@dataclass(frozen=True)
class NodeIdentity:
    device_id: str
    device_class: str
    address: int
    baud: int = 19200
    board: str = "esp32"
    extra: Mapping[str, Any] = field(default_factory=dict)   # e.g. "uart" on the unix port

    def node_json(self) -> dict[str, Any]:
        if not 1 <= self.address <= 247:
            raise FlashError(f"Modbus address {self.address} is not 1-247")
        return {"device_id": self.device_id, "class": self.device_class,
                "address": self.address, "baud": self.baud, "board": self.board,
                **self.extra}


def thresholds_record(device_class: str, values: Mapping[str, float]) -> bytes:
    """data/config.json as app.store writes it, from engineering values checked against the
    class's holding registers (name, range, one register wide)."""
    maps = load_maps()
    cmap = maps.classes.get(device_class)
    if cmap is None:
        raise FlashError(f"no device class {device_class!r}")
    raw: dict[str, int] = {}
    for name, value in values.items():
        try:
            reg = cmap.holding_register(name)
        except KeyError:
            raise FlashError(f"{device_class} has no holding register {name!r}") from None
        if name == "command" or reg.width != 1:
            raise FlashError(f"{name} is not a threshold")
        if (reg.minimum is not None and value < reg.minimum) or \
                (reg.maximum is not None and value > reg.maximum):
            raise FlashError(f"{name} = {value} is outside {reg.minimum}..{reg.maximum} "
                             f"{reg.unit}")
        word = reg.encode(value)[0]
        raw[name] = word - 0x10000 if reg.type == "i16" and word & 0x8000 else word
    body = json.dumps({"class": device_class, "holding": raw}).encode()
    return b"%08x\n" % (binascii.crc32(body) & 0xFFFFFFFF) + body


def plan(release: Path, identity: NodeIdentity, trust: Mapping[str, Any], *,
         thresholds: Mapping[str, float] | None = None,
         firmware_dir: Path = FIRMWARE_DIR) -> dict[str, bytes]:
    """Every file to write, by board path. Refuses a release the node itself would refuse."""
    keys = KeySet.from_json(trust["keys"])
    floor = trust["floor"]
    verifier = ReleaseVerifier(keys, (floor[0], floor[1], floor[2]))
    verify(release, verifier, device_class=identity.device_class, board=identity.board)
    files: dict[str, bytes] = {}
    for name in ("boot.py", "main.py"):
        files[name] = (firmware_dir / name).read_bytes()
    files["slots.json"] = json.dumps({"active": "a", "previous": None, "trial": False,
                                      "tries": 0}).encode()
    root = release / "files"
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files["a/" + path.relative_to(root).as_posix()] = path.read_bytes()
    for name in ("manifest.json", "manifest.sig"):
        files["a/" + name] = (release / name).read_bytes()
    files["data/node.json"] = json.dumps(identity.node_json()).encode()
    if thresholds:
        files["data/config.json"] = thresholds_record(identity.device_class, thresholds)
    files["data/trust.json"] = json.dumps(dict(trust)).encode()
    return files


class Transport(Protocol):
    """The part of mpremote's SerialTransport this module uses."""

    def exec(self, command: str) -> bytes: ...
    def eval(self, expression: str) -> Any: ...
    def fs_writefile(self, dest: str, data: bytes, chunk_size: int = ...,
                     progress_callback: Callable[[int, int], None] | None = ...) -> None: ...


Progress = Callable[[str, int, int], None]   # (board path, bytes done, bytes total)

# Defined on the board once per session: SHA-256 of a file as the board reads it from flash.
_HASHER = ("import hashlib\n"
           "def _ef_sha256(p):\n"
           " h = hashlib.sha256()\n"
           " with open(p, 'rb') as f:\n"
           "  while True:\n"
           "   b = f.read(512)\n"
           "   if not b:\n"
           "    return h.digest()\n"
           "   h.update(b)\n")


def _dirs(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in out:
                out.append(d)
    return out


def write(transport: Transport, files: Mapping[str, bytes],
          progress: Progress | None = None) -> None:
    """Write every file, then read each back through the board's SHA-256; FlashError if any
    differs. Directories are made as needed (existing ones are kept)."""
    for d in _dirs(list(files)):
        transport.exec(f"import os\ntry:\n os.mkdir({d!r})\nexcept OSError:\n pass")
    for path, data in files.items():
        def step(done: int, total: int, path: str = path) -> None:
            if progress is not None:
                progress(path, done, total)
        transport.fs_writefile(path, data, chunk_size=CHUNK, progress_callback=step)
        if not data:
            step(0, 0)
        log.info("wrote %s (%d bytes)", path, len(data))
    transport.exec(_HASHER)
    bad = []
    for path, data in files.items():
        got = transport.eval(f"_ef_sha256({path!r})")
        if got != hashlib.sha256(data).digest():
            bad.append(path)
    if bad:
        raise FlashError(f"read-back differs for {', '.join(bad)}")
    log.info("read back %d files: all match", len(files))
