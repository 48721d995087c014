"""The device refuses bad releases by itself: releases built and signed by
provisioning/release.py (the real app, compiled by mpy-cross) are checked by app.ota_verify on
the MicroPython unix port, and each refusal carries its reason code, the same one the CPython
contract (contracts.release, used by fleet and gateway) gives for the same release.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts.release import REASONS, ReleaseError, ReleaseVerifier, canonical
from hardware.mpy import tool_beside_python
from provisioning import release as rel

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SCRIPT = Path(__file__).parent / "mp_tools" / "ota_check.py"
MICROPYTHON = tool_beside_python("micropython")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys, a device trust file, and one release directory per case."""
    d = tmp_path_factory.mktemp("ota")
    for name in ("old", "new", "stranger"):
        rel.generate_key(d / f"{name}.key")
    trust = rel.device_trust(rel.make_keyset(1, [d / "old.pub"], []), (1, 2, 0))
    (d / "trust.json").write_text(json.dumps(trust))
    base = rel.build(d / "good", version=(1, 4, 0), min_version=(1, 3, 0),
                     device_class="fire", board="esp32")
    rel.sign(base, d / "old.key")

    def variant(name: str, key: str, keyset: object = None, **body: object) -> Path:
        out = Path(shutil.copytree(base, d / name))
        manifest = json.loads((out / "manifest.json").read_bytes())
        manifest.update(body)
        (out / "manifest.json").write_bytes(canonical(manifest))
        rel.sign(out, d / f"{key}.key", keyset)  # type: ignore[arg-type]
        return out

    tampered = variant("tampered", "old")
    node = tampered / "files" / "app" / "node.mpy"
    data = bytearray(node.read_bytes())
    data[len(data) // 2] ^= 0x20
    node.write_bytes(bytes(data))
    truncated = variant("truncated", "old")
    (truncated / "files" / "app" / "aqi.mpy").write_bytes(
        (truncated / "files" / "app" / "aqi.mpy").read_bytes()[:-3])
    variant("unknown_key", "stranger")
    variant("downgrade", "old", version=[1, 1, 0], min_version=[1, 0, 0])
    variant("flood_release", "old", **{"class": "flood"})
    resigned = variant("edited_after_signing", "old")
    body = json.loads((resigned / "manifest.json").read_bytes())
    body["min_version"] = [1, 0, 0]               # a rollback window opened after signing
    (resigned / "manifest.json").write_bytes(canonical(body))
    entries = json.loads((base / "manifest.json").read_bytes())["files"]
    variant("climbing_out", "old", files={**entries, "../boot.py": entries["app/node.mpy"]})
    variant("window_inverted", "old", min_version=[1, 9, 0])
    old_id = json.loads((d / "old.pub").read_text())["keyid"]
    rotation = rel.make_keyset(2, [d / "new.pub"], [old_id])
    variant("rotation", "old", rotation, version=[1, 5, 0], min_version=[1, 5, 0])
    variant("by_new_key", "new", version=[1, 6, 0], min_version=[1, 5, 0])
    variant("later_by_old_key", "old", version=[1, 7, 0], min_version=[1, 5, 0])
    return d


def on_device(lab: Path, *steps: str,
              trust: Path | None = None) -> tuple[list[tuple[str, int]], dict[str, object]]:
    assert MICROPYTHON is not None, "MicroPython unix port missing"
    env = dict(os.environ, MICROPYPATH=str(FIRMWARE))
    proc = subprocess.run(
        [MICROPYTHON, str(SCRIPT), str(trust or lab / "trust.json"), "fire", "esp32",
         *(f"{s.split(':')[0]}:{lab / s.split(':')[1]}" for s in steps)],
        cwd=FIRMWARE, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    results = [(line.split()[0].split(":")[1].rsplit("/", 1)[-1], int(line.split()[1]))
               for line in lines[:-1]]
    return results, json.loads(lines[-1])


def contract_verdict(lab: Path, name: str, verifier: ReleaseVerifier) -> int:
    try:
        rel.verify(lab / name, verifier, device_class="fire", board="esp32")
    except ReleaseError as exc:
        return exc.code
    return 0


CASES = [("good", "ok"), ("tampered", "bad hash"), ("truncated", "bad size"),
         ("unknown_key", "unknown key"), ("downgrade", "downgrade"),
         ("flood_release", "wrong class or board"),
         ("edited_after_signing", "bad signature"),
         ("climbing_out", "malformed"),          # a path outside the slot, even if signed
         ("window_inverted", "malformed")]       # min_version above version


def test_the_device_accepts_a_good_release_and_refuses_each_bad_one_with_its_reason(
        lab: Path) -> None:
    results, _ = on_device(lab, *(f"verify:{name}" for name, _ in CASES))
    assert [(name, REASONS[code]) for name, code in results] == CASES
    # the fleet and the gateway, through contracts.release, give the same verdicts
    trusted = rel.load_trust(lab / "trust.json")
    assert [REASONS[contract_verdict(lab, n, trusted)] for n, _ in CASES] == \
        [reason for _, reason in CASES]


def test_after_a_key_rotation_the_device_refuses_the_revoked_key_and_takes_the_new_one(
        lab: Path) -> None:
    results, trust = on_device(lab, "verify:by_new_key", "install:rotation",
                               "verify:later_by_old_key", "verify:by_new_key",
                               "verify:good")
    assert [(n, REASONS[c]) for n, c in results] == [
        ("by_new_key", "unknown key"),           # before the rotation: not trusted yet
        ("rotation", "ok"),
        ("later_by_old_key", "revoked key"),     # from then on
        ("by_new_key", "ok"),
        ("good", "revoked key"),                 # the old key's releases, even earlier ones
    ]
    keys = trust["keys"]
    assert isinstance(keys, dict) and keys["version"] == 2
    assert trust["floor"] == [1, 5, 0]           # the rotation release raised the floor


def test_an_installed_release_raises_the_anti_rollback_floor_on_the_device(lab: Path) -> None:
    results, trust = on_device(lab, "install:good", "verify:good")
    assert [c for _, c in results] == [0, 0]
    assert trust["floor"] == [1, 3, 0]


# Signed manifests that are wrong in one field each: the device (MicroPython) and the contract
# (CPython) are two implementations of one format and must give the same reason for every one.
def _mutations(entries: dict[str, object], new_pub: str,
               new_id: str) -> dict[str, dict[str, object]]:
    one = next(iter(entries))
    e = entries[one]
    return {
        "version_as_text": {"version": "1.4.0"},
        "version_of_four": {"version": [1, 4, 0, 0]},
        "version_negative": {"version": [1, -4, 0]},
        "version_bool": {"version": [1, True, 0]},
        "version_huge": {"version": [1, 70000, 0]},
        "manifest_v2": {"v": 2},
        "wrong_type": {"type": "edgefleet-config"},
        "class_empty": {"class": ""},
        "board_number": {"board": 32},
        "no_files": {"files": {}},
        "files_list": {"files": [one]},
        "size_negative": {"files": {one: {**e, "size": -1}}},   # type: ignore[dict-item]
        "sha_short": {"files": {one: {**e, "sha256": "ab" * 16}}},  # type: ignore[dict-item]
        "entry_extra": {"files": {one: {**e, "mode": 493}}},  # type: ignore[dict-item]
        "absolute_path": {"files": {"/" + one: e}},
        "dot_path": {"files": {"./" + one: e}},
        "double_slash": {"files": {one.replace("/", "//"): e}},
        "backslash": {"files": {one.replace("/", "\\"): e}},
        "trust_v0": {"trust": {"version": 0, "keys": {new_id: new_pub}, "revoked": []}},
        "trust_keys_list": {"trust": {"version": 2, "keys": [new_pub], "revoked": []}},
        "trust_wrong_id": {"trust": {"version": 2, "keys": {"0" * 16: new_pub}, "revoked": []}},
        "trust_extra": {"trust": {"version": 2, "keys": {new_id: new_pub}, "revoked": [],
                                  "threshold": 1}},
        "trust_all_revoked": {"trust": {"version": 2, "keys": {new_id: new_pub},
                                        "revoked": [new_id]}},
        "trust_fine": {"trust": {"version": 2, "keys": {new_id: new_pub}, "revoked": []}},
    }


def test_the_device_and_the_contract_refuse_every_malformed_manifest_alike(
        lab: Path, tmp_path: Path) -> None:
    base = lab / "good"
    body = json.loads((base / "manifest.json").read_bytes())
    new = json.loads((lab / "new.pub").read_text())
    cases = _mutations(body["files"], new["public"], new["keyid"])
    for name, change in cases.items():
        out = Path(shutil.copytree(base, tmp_path / name))
        (out / "manifest.json").write_bytes(canonical({**body, **change}))
        rel.sign(out, lab / "old.key")
    results, _ = on_device(tmp_path, *(f"verify:{n}" for n in cases), trust=lab / "trust.json")
    trusted = rel.load_trust(lab / "trust.json")
    contract = {n: contract_verdict(tmp_path, n, trusted) for n in cases}
    assert dict(results) == contract
    assert contract["trust_fine"] == 0
    assert {c for n, c in contract.items() if n != "trust_fine"} == {1}  # all malformed
