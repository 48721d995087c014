"""The gateway relays only what it can verify: a bundle is fetched with its token, checked
against the command's size and SHA-256, unpacked only if every member is a plain file, verified
against the gateway's own trust, and cached so it is never fetched twice."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import pytest

from contracts.release import ReleaseVerifier
from gateway.ota_bundle import (
    BundleCache,
    BundleError,
    download,
    load_trust,
    read_bundle,
    verify_bundle,
)
from tests.gateway.otafleet import (
    TOKEN,
    BundleServer,
    Keys,
    bundle,
    make_keys,
    make_release,
    sha256,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    return make_release(tmp_path_factory.mktemp("rel") / "fire-1.4.0", keys)


@pytest.fixture
def server() -> BundleServer:
    s = BundleServer()
    yield s  # type: ignore[misc]
    s.close()


def trust(keys: Keys) -> ReleaseVerifier:
    return load_trust(keys.trust)


def _no_wait(_: float) -> None:
    return None


def _refusal(data: bytes, keys: Keys, device_class: str = "fire") -> str:
    with pytest.raises(BundleError) as err:
        verify_bundle(read_bundle(data), trust(keys), device_class=device_class)
    return err.value.reason


# -- what is inside ---------------------------------------------------------------------------
def test_a_signed_bundle_verifies_and_names_its_release(release: Path, keys: Keys) -> None:
    files = read_bundle(bundle(release))
    manifest = verify_bundle(files, trust(keys), device_class="fire")
    assert manifest.version == (1, 4, 0)
    assert "manifest.json" in files and any(n.startswith("files/app/") for n in files)


def test_a_bundle_with_one_top_directory_is_read_as_that_directory(release: Path,
                                                                   keys: Keys) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(release, arcname="fire-1.4.0")
    verify_bundle(read_bundle(buf.getvalue()), trust(keys), device_class="fire")


def test_a_tampered_file_is_refused_with_bad_hash(release: Path, keys: Keys,
                                                  tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    node = copy / "files" / "app" / "node.py"
    node.write_bytes(node.read_bytes().replace(b"def ", b"def\t", 1))  # same size
    assert _refusal(bundle(copy), keys) == "bad_hash"


def test_a_file_the_manifest_does_not_name_is_refused(release: Path, keys: Keys,
                                                      tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    (copy / "files" / "app" / "backdoor.py").write_text("import os\n")
    assert _refusal(bundle(copy), keys) == "malformed"


def test_an_edited_manifest_is_refused_with_bad_signature(release: Path, keys: Keys,
                                                          tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    manifest = copy / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"min_version":[0,1,0]',
                                                       b'"min_version":[0,0,1]'))
    assert _refusal(bundle(copy), keys) == "bad_signature"


def test_a_release_signed_by_a_key_the_gateway_does_not_trust_is_refused(
        release: Path, tmp_path: Path) -> None:
    stranger = make_keys(tmp_path / "stranger")
    assert _refusal(bundle(release), stranger) == "unknown_key"


def test_a_release_for_another_class_is_refused(release: Path, keys: Keys) -> None:
    assert _refusal(bundle(release), keys, device_class="flood") == "wrong_class_or_board"


@pytest.mark.parametrize("member", [
    pytest.param(("/etc/cron.d/x", tarfile.REGTYPE), id="absolute path"),
    pytest.param(("files/../../evil.py", tarfile.REGTYPE), id="dot-dot"),
    pytest.param(("files/app/link.py", tarfile.SYMTYPE), id="symlink"),
    pytest.param(("files/app/hard.py", tarfile.LNKTYPE), id="hard link"),
    pytest.param(("files/app/dev", tarfile.CHRTYPE), id="device"),
])
def test_dangerous_tar_members_are_refused_before_anything_is_read(
        release: Path, keys: Keys, member: tuple[str, bytes]) -> None:
    name, kind = member
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = "/etc/passwd"
    elif kind == tarfile.REGTYPE:
        info.size = 4
    with pytest.raises(BundleError) as err:
        read_bundle(bundle(release, extra={name: info}))
    assert err.value.reason == "malformed" and name.lstrip("/")[:5] in str(err.value)


def test_something_that_is_not_a_tar_is_malformed() -> None:
    with pytest.raises(BundleError) as err:
        read_bundle(b"\x1f\x8b" + b"not a tar" * 100)
    assert err.value.reason == "malformed"


# -- fetching ---------------------------------------------------------------------------------
def test_the_download_carries_the_bearer_token_and_checks_size_and_hash(
        release: Path, server: BundleServer) -> None:
    data = bundle(release)
    server.bundles["b1"] = data
    got = asyncio.run(download(server.url("b1"), TOKEN, len(data), sha256(data)))
    assert got == data
    assert server.requests == [("/bundles/b1", f"Bearer {TOKEN}")]


def test_a_wrong_sha256_is_refused_after_trying_again(release: Path,
                                                      server: BundleServer) -> None:
    data = bundle(release)
    server.bundles["b1"] = data
    with pytest.raises(BundleError) as err:
        asyncio.run(download(server.url("b1"), TOKEN, len(data), "0" * 64, retries=2,
                             sleep=_no_wait))
    assert err.value.reason == "bad_hash"
    assert len(server.requests) == 3  # a corrupting proxy may pass the next one intact


def test_a_body_longer_than_the_command_says_is_refused(release: Path,
                                                        server: BundleServer) -> None:
    data = bundle(release)
    server.bundles["b1"] = data
    with pytest.raises(BundleError) as err:
        asyncio.run(download(server.url("b1"), TOKEN, len(data) - 512, sha256(data),
                             retries=0))
    assert err.value.reason == "bad_size"


def test_a_wrong_token_fails_at_once_without_retries(server: BundleServer) -> None:
    server.bundles["b1"] = b"x"
    with pytest.raises(BundleError) as err:
        asyncio.run(download(server.url("b1"), "stolen", 1, sha256(b"x"), retries=3,
                             sleep=_no_wait))
    assert err.value.reason == "download" and "401" in str(err.value)
    assert len(server.requests) == 1
    assert "stolen" not in str(err.value)


def test_a_fleet_that_is_down_fails_as_download_after_the_retries(server: BundleServer) -> None:
    url = server.url("b1")
    server.close()  # nothing listens there any more
    pauses: list[float] = []
    with pytest.raises(BundleError) as err:
        asyncio.run(download(url, TOKEN, 10, "0" * 64, retries=3, sleep=pauses.append))
    assert err.value.reason == "download"
    assert pauses == [1.0, 2.0, 4.0]


def test_a_fleet_answering_503_is_tried_again(server: BundleServer) -> None:
    server.status = 503
    with pytest.raises(BundleError) as err:
        asyncio.run(download(server.url("b1"), TOKEN, 10, "0" * 64, retries=2,
                             sleep=_no_wait))
    assert "503" in str(err.value) and len(server.requests) == 3


# -- the cache --------------------------------------------------------------------------------
def test_a_cached_bundle_is_verified_again_and_dropped_when_changed_on_disk(
        release: Path, keys: Keys, tmp_path: Path) -> None:
    data = bundle(release)
    cache = BundleCache(tmp_path / "cache", 10 * 1024 * 1024)
    cache.put(sha256(data), read_bundle(data))
    found = cache.get(sha256(data), trust(keys), device_class="fire")
    assert found is not None and found[1].version == (1, 4, 0)
    assert (found[0] / "manifest.json").exists()
    (found[0] / "files" / "app" / "node.py").write_text("# changed on the card\n")
    assert cache.get(sha256(data), trust(keys), device_class="fire") is None
    assert not cache.path(sha256(data)).exists()


def test_a_half_written_cache_entry_is_not_used(release: Path, keys: Keys,
                                                tmp_path: Path) -> None:
    data = bundle(release)
    cache = BundleCache(tmp_path / "cache", 10 * 1024 * 1024)
    entry = cache.put(sha256(data), read_bundle(data))
    (entry / ".verified").unlink()  # as after a power cut before the mark
    assert cache.get(sha256(data), trust(keys)) is None


def test_the_cache_stays_within_its_bound_least_recently_used_first(
        release: Path, keys: Keys, tmp_path: Path) -> None:
    files = read_bundle(bundle(release))
    one = sum(len(b) for b in files.values())
    cache = BundleCache(tmp_path / "cache", int(one * 2.5))
    cache.put("a" * 64, files)
    cache.put("b" * 64, files)
    cache.get("a" * 64, trust(keys))  # a is used again: b is now the oldest
    cache.put("c" * 64, files)
    assert cache.path("a" * 64).exists() and cache.path("c" * 64).exists()
    assert not cache.path("b" * 64).exists()
    assert cache.size() <= int(one * 2.5)
    cache.put("d" * 64, files, keep={"a" * 64, "c" * 64})  # in use: never evicted
    assert all(cache.path(x * 64).exists() for x in "acd")
    assert cache.size() > cache.max_bytes  # the bound gives way to bundles in use


def test_two_campaigns_caching_their_bundles_at_once_both_keep_them(
        release: Path, keys: Keys, tmp_path: Path) -> None:
    """The gateway stores bundles from worker threads: one bundle's tidy-up must never sweep
    away another's entry while it is being written (seen on the whole stack as `cache` and
    `gateway_error` failures when four campaigns downloaded together)."""
    from concurrent.futures import ThreadPoolExecutor

    files = read_bundle(bundle(release))
    cache = BundleCache(tmp_path / "cache", 100 * 1024 * 1024)
    names = [f"{i:x}" * 64 for i in range(8)]
    with ThreadPoolExecutor(len(names)) as pool:
        for _ in pool.map(lambda name: cache.put(name, files), names):
            pass  # a put that lost its temporary directory raises here
    assert all(cache.get(name, trust(keys)) is not None for name in names)
