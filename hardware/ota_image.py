"""The OTA image stream and its encoding in the OTA register window: what a master writes into a
node to move a whole signed release into its inactive image slot.

Pure (bytes and values in, bytes, words and values out); the gateway (``gateway.ota_transfer``)
drives a node with it, the device's side is ``firmware/app/ota_rx.py``, the window itself is
declared in ``hardware/registers/common.toml`` ``[ota]`` (rendered into docs/registers.md).

The stream (format 1) is the release as the node stores it, in one pass, so the node can write
each file straight into its slot as the bytes arrive without ever holding the image::

    b"EFI1"                                   magic and format version
    per entry:  u8 L (1-255), L bytes path    the path inside the slot (ASCII, relative)
                u32 size (big-endian)
                size bytes                    the file
    u8 0                                      end of stream; nothing may follow

Entries come in this order: ``manifest.json``, ``manifest.sig``, then every file the manifest
names (``app/...``), sorted by path. Integrity in flight is the per-chunk CRC-16; trust is the
device's own check of the signed manifest and of every file's SHA-256 at its next boot. The
SHA-256 of the whole stream goes in the offer as the image's identity: the same offer again
means "resume", another means "start over".

The offer (23 words): version (3), stream size (u32, 2 words, high first), chunk size in bytes,
chunk count, SHA-256 of the stream (16 words). A chunk write: chunk index, the chunk's bytes two
per word (high byte first; an odd last byte padded with 0), then CRC-16/MODBUS of the index word
and the chunk's bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from hardware.regmap import load_maps

__all__ = [
    "MAGIC",
    "ImageError",
    "Offer",
    "OtaStatus",
    "StreamImage",
    "chunk_count",
    "chunk_words",
    "crc16",
    "pack",
    "unpack",
]

MAGIC = b"EFI1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
Version = tuple[int, int, int]


class ImageError(ValueError):
    """A stream or a release that cannot be packed or unpacked; the message says where."""


def _safe(path: str) -> bool:
    parts = path.split("/")
    return (bool(path) and path.isascii() and not path.startswith("/") and "\\" not in path
            and "\x00" not in path and all(p not in ("", ".", "..") for p in parts))


def pack(manifest: bytes, signature: bytes, files: Mapping[str, bytes]) -> bytes:
    """The stream of a release: its manifest, signature and exactly the files it names (keyed by
    the manifest's paths, ``app/...``). Refuses files the manifest does not name, files it names
    that are missing or of another size, and paths that could leave the slot."""
    try:
        named = json.loads(manifest)["files"]
        sizes = {path: int(entry["size"]) for path, entry in named.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ImageError("manifest.json is not a release manifest with files") from None
    if set(files) != set(sizes):
        raise ImageError(f"files differ from the manifest: missing "
                         f"{sorted(set(sizes) - set(files))}, extra "
                         f"{sorted(set(files) - set(sizes))}")
    out = bytearray(MAGIC)
    entries = [(MANIFEST, manifest), (SIGNATURE, signature)]
    entries += [(path, files[path]) for path in sorted(files)]
    for path, data in entries:
        if path not in (MANIFEST, SIGNATURE):
            if not path.startswith("app/") or not _safe(path):
                raise ImageError(f"file path {path!r} must be app/..., relative, without . or ..")
            if len(data) != sizes[path]:
                raise ImageError(f"{path}: {len(data)} bytes, the manifest says {sizes[path]}")
        name = path.encode()
        if len(name) > 255:
            raise ImageError(f"file path {path!r} is longer than 255 bytes")
        out += bytes([len(name)]) + name + struct.pack(">I", len(data)) + data
    out.append(0)
    return bytes(out)


@dataclass(frozen=True)
class StreamImage:
    manifest: bytes
    signature: bytes
    files: dict[str, bytes]

    @property
    def version(self) -> Version:
        v = json.loads(self.manifest)["version"]
        return int(v[0]), int(v[1]), int(v[2])


def unpack(stream: bytes) -> StreamImage:
    """The release inside a stream (the device's reading of it, in CPython); ImageError."""
    if stream[:4] != MAGIC:
        raise ImageError("not an edgefleet image stream (magic)")
    pos = 4
    entries: dict[str, bytes] = {}
    while True:
        if pos >= len(stream):
            raise ImageError("stream ends before its end marker")
        length = stream[pos]
        pos += 1
        if length == 0:
            break
        if pos + length + 4 > len(stream):
            raise ImageError(f"entry header at byte {pos - 1} runs past the end")
        path = stream[pos:pos + length].decode("ascii", "replace")
        (size,) = struct.unpack_from(">I", stream, pos + length)
        pos += length + 4
        if pos + size > len(stream):
            raise ImageError(f"{path}: {size} bytes run past the end")
        if path in entries or not _safe(path):
            raise ImageError(f"entry path {path!r} repeated or unsafe")
        entries[path] = stream[pos:pos + size]
        pos += size
    if pos != len(stream):
        raise ImageError(f"{len(stream) - pos} bytes after the end marker")
    try:
        manifest = entries.pop(MANIFEST)
        signature = entries.pop(SIGNATURE)
    except KeyError:
        raise ImageError("stream lacks manifest.json or manifest.sig") from None
    return StreamImage(manifest, signature, entries)


# -- the register window ----------------------------------------------------------------------
def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), as firmware/app/modbus.py."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


@dataclass(frozen=True)
class Offer:
    version: Version
    size: int
    chunk_bytes: int
    chunks: int
    sha256: bytes

    @classmethod
    def of(cls, stream: bytes, chunk_bytes: int | None = None,
           version: Version | None = None) -> Offer:
        """The offer for a stream (its version read from its manifest unless given)."""
        window = load_maps().ota
        chunk_bytes = chunk_bytes or window.max_chunk_bytes
        if not 2 <= chunk_bytes <= window.max_chunk_bytes or chunk_bytes % 2:
            raise ImageError(f"chunk size {chunk_bytes} must be even, 2-{window.max_chunk_bytes}")
        if not stream or len(stream) > 0xFFFFFFFF:
            raise ImageError("an image stream is 1 byte to 4 GiB")
        if chunk_count(len(stream), chunk_bytes) > 0xFFFF:
            raise ImageError("more than 65535 chunks: use bigger chunks")
        if version is None:
            version = unpack(stream).version
        return cls(version, len(stream), chunk_bytes, chunk_count(len(stream), chunk_bytes),
                   hashlib.sha256(stream).digest())

    def words(self) -> list[int]:
        return [*self.version, self.size >> 16, self.size & 0xFFFF, self.chunk_bytes,
                self.chunks, *struct.unpack(">16H", self.sha256)]


def chunk_words(stream: bytes, index: int, chunk_bytes: int) -> list[int]:
    """The FC16 values for chunk ``index``: index, data words, CRC."""
    data = stream[index * chunk_bytes:(index + 1) * chunk_bytes]
    if not data:
        raise ImageError(f"chunk {index} is past the end of the stream")
    head = struct.pack(">H", index)
    padded = data + b"\0" if len(data) % 2 else data
    return [index, *struct.unpack(f">{len(padded) // 2}H", padded), crc16(head + data)]


@dataclass(frozen=True)
class OtaStatus:
    """The OTA input block as read from a node (``ota_state`` ... ``ota_version``)."""

    state: str
    received: int
    next_chunk: int
    reason: int
    version: Version

    @classmethod
    def decode(cls, words: list[int]) -> OtaStatus:
        names = {v: n for n, v in load_maps().ota.states.items()}
        return cls(names.get(words[0], f"unknown {words[0]}"), (words[1] << 16) | words[2],
                   words[3], words[4], (words[5], words[6], words[7]))
