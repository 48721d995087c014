"""Release directories on disk (provisioning.release and `edgefleet release`): the real app
compiled by mpy-cross, signed with an offline key, verified the way a device does."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from contracts.release import BadHash, BadSize, Malformed, ReleaseVerifier, RevokedKey, key_id
from edgefleet.cli import main
from provisioning import release as rel


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    rel.generate_key(d / "old.key")
    rel.generate_key(d / "new.key")
    return d


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: Path) -> Path:
    out = rel.build(tmp_path_factory.mktemp("rel") / "r", version=(1, 4, 0),
                    min_version=(1, 3, 0), device_class="fire", board="esp32")
    rel.sign(out, keys / "old.key")
    return out


@pytest.fixture
def release(built: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(built, tmp_path / "r"))


def device(keys: Path) -> ReleaseVerifier:
    return ReleaseVerifier(rel.make_keyset(1, [keys / "old.pub"], []), (1, 0, 0))


def test_a_signing_key_is_written_owner_only_and_its_public_half_beside_it(keys: Path) -> None:
    assert stat.S_IMODE((keys / "old.key").stat().st_mode) == 0o600
    assert key_id(rel.load_public(keys / "old.pub")) in (keys / "old.pub").read_text()


def test_a_built_release_holds_the_compiled_app_and_verifies(release: Path, keys: Path) -> None:
    m = rel.verify(release, device(keys), device_class="fire", board="esp32")
    assert "app/node.mpy" in m.files and all(n.endswith(".mpy") for n in m.files)
    assert (release / "files" / "app" / "node.mpy").read_bytes()[:1] == b"M"  # mpy header


def test_a_tampered_file_is_refused(release: Path, keys: Path) -> None:
    target = release / "files" / "app" / "node.mpy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 1
    target.write_bytes(bytes(data))
    with pytest.raises(BadHash):
        rel.verify(release, device(keys))


def test_a_missing_file_is_refused(release: Path, keys: Path) -> None:
    (release / "files" / "app" / "node.mpy").unlink()
    with pytest.raises(BadSize):
        rel.verify(release, device(keys))


def test_a_file_slipped_in_beside_the_manifest_is_refused(release: Path, keys: Path) -> None:
    (release / "files" / "app" / "backdoor.mpy").write_bytes(b"M")
    with pytest.raises(Malformed, match="backdoor"):
        rel.verify(release, device(keys))


def test_an_unsigned_release_is_refused(release: Path, keys: Path) -> None:
    (release / "manifest.sig").unlink()
    with pytest.raises(Malformed, match="not signed"):
        rel.verify(release, device(keys))


def test_a_rotation_signed_by_the_old_key_moves_the_device_to_the_new_one(
        release: Path, keys: Path) -> None:
    old_id = key_id(rel.load_public(keys / "old.pub"))
    rotation = rel.make_keyset(2, [keys / "new.pub"], [old_id])
    rel.sign(release, keys / "old.key", rotation)
    dev = device(keys)
    dev = dev.accept(rel.verify(release, dev))
    with pytest.raises(RevokedKey):
        rel.verify(release, dev)     # the same release again: its key is revoked now
    rel.sign(release, keys / "new.key")
    rel.verify(release, dev)


def test_the_command_line_builds_signs_and_verifies(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    k, ks, trust, out = (str(tmp_path / n) for n in ("k.key", "ks.json", "trust.json", "r"))
    assert main(["release", "keygen", k]) == 0
    assert main(["release", "keyset", ks, "--version", "1", "--pub", str(tmp_path / "k.pub")]) == 0
    assert main(["release", "trust", trust, "--keyset", ks, "--floor", "1.0.0"]) == 0
    assert main(["release", "build", out, "--version", "1.1.0", "--class", "flood"]) == 0
    assert main(["release", "verify", out, "--trust", trust]) == 1     # unsigned
    assert main(["release", "sign", out, k]) == 0
    assert main(["release", "verify", out, "--trust", trust, "--class", "flood"]) == 0
    assert main(["release", "verify", out, "--trust", trust, "--class", "fire"]) == 1
    printed = capsys.readouterr().out
    assert "OK 1.1.0 for flood/esp32" in printed
    assert "REFUSED (8)" in printed and "REFUSED (1)" in printed
    assert "PRIVATE" not in printed
