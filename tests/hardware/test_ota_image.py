"""The OTA image stream and its register encoding: byte vectors, no device."""

from __future__ import annotations

import json

import pytest

from hardware.ota_image import (
    ImageError,
    Offer,
    OtaStatus,
    chunk_words,
    crc16,
    pack,
    unpack,
)

MANIFEST = json.dumps({"version": [1, 4, 0], "files": {
    "app/node.mpy": {"size": 3, "sha256": "0" * 64},
    "app/a/b.mpy": {"size": 0, "sha256": "0" * 64}}}).encode()


def test_a_release_packs_into_one_stream_and_unpacks_to_the_same_files() -> None:
    files = {"app/node.mpy": b"abc", "app/a/b.mpy": b""}
    stream = pack(MANIFEST, b'{"sig"}', files)
    assert stream[:4] == b"EFI1" and stream[-1] == 0
    # the manifest first, then the signature, then the files sorted by path
    assert stream[4:5] == bytes([len("manifest.json")]) and stream[5:18] == b"manifest.json"
    image = unpack(stream)
    assert (image.manifest, image.signature, image.files) == (MANIFEST, b'{"sig"}', files)
    assert image.version == (1, 4, 0)


@pytest.mark.parametrize(("files", "match"), [
    ({"app/node.mpy": b"abc"}, "missing"),
    ({"app/node.mpy": b"abc", "app/a/b.mpy": b"", "app/x.mpy": b""}, "extra"),
    ({"app/node.mpy": b"abcd", "app/a/b.mpy": b""}, "the manifest says 3"),
])
def test_the_packer_refuses_files_that_differ_from_the_manifest(
        files: dict[str, bytes], match: str) -> None:
    with pytest.raises(ImageError, match=match):
        pack(MANIFEST, b"", files)


def test_a_path_that_would_leave_the_slot_is_refused() -> None:
    manifest = json.dumps({"files": {"app/../boot.py": {"size": 0, "sha256": ""}}}).encode()
    with pytest.raises(ImageError, match="relative"):
        pack(manifest, b"", {"app/../boot.py": b""})


@pytest.mark.parametrize("damage", [b"XFI1", b"trailing", b"cut"])
def test_a_damaged_stream_does_not_unpack(damage: bytes) -> None:
    stream = pack(MANIFEST, b"s", {"app/node.mpy": b"abc", "app/a/b.mpy": b""})
    bad = {b"XFI1": b"XFI1" + stream[4:], b"trailing": stream + b"\0",
           b"cut": stream[:-5]}[damage]
    with pytest.raises(ImageError):
        unpack(bad)


def test_crc16_is_modbus_crc() -> None:
    assert crc16(b"123456789") == 0x4B37   # the CRC-16/MODBUS check value


def test_chunks_carry_index_data_words_and_the_crc_of_index_and_bytes() -> None:
    stream = bytes(range(250))
    assert chunk_words(stream, 0, 240)[:3] == [0, 0x0001, 0x0203]
    last = chunk_words(stream, 1, 240)          # 10 bytes
    assert last[0] == 1 and len(last) == 1 + 5 + 1
    assert last[-1] == crc16(b"\x00\x01" + stream[240:])
    odd = chunk_words(bytes(range(241)), 1, 240)  # one byte, padded
    assert odd[1] == 240 << 8 and odd[-1] == crc16(b"\x00\x01" + bytes([240]))
    with pytest.raises(ImageError):
        chunk_words(stream, 2, 240)


def test_the_offer_is_23_words_and_names_the_stream() -> None:
    stream = pack(MANIFEST, b"s", {"app/node.mpy": b"abc", "app/a/b.mpy": b""})
    offer = Offer.of(stream)
    words = offer.words()
    assert len(words) == 23
    assert words[:3] == [1, 4, 0]
    assert (words[3] << 16 | words[4]) == len(stream)
    assert words[5:7] == [240, -(-len(stream) // 240)]
    with pytest.raises(ImageError, match="even"):
        Offer.of(stream, 241)


def test_the_status_block_decodes() -> None:
    status = OtaStatus.decode([4, 1, 2, 7, 6, 1, 4, 0])
    assert (status.state, status.received, status.next_chunk, status.reason,
            status.version) == ("refused", 65538, 7, 6, (1, 4, 0))
