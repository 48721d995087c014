"""Release bundles at the gateway: fetch one, prove it is what the fleet signed, keep it.

The fleet hands the gateway a URL, a bearer token, a size and a SHA-256 (``OtaCommand``). The
bundle is an uncompressed tar of a release directory (``manifest.json``, ``manifest.sig``,
``files/...``; docs/provisioning.md). The gateway never relays what it cannot verify, so before
anything reaches a node:

1. the download is ``size`` bytes with that SHA-256 (a longer body is cut off at ``size + 1``);
2. the tar holds only regular files and directories with relative names: no absolute path, no
   ``..``, no symbolic or hard link, no device; anything else is refused as ``malformed``;
3. the manifest's signature verifies against the gateway's own trust (``[ota] trust``, the file
   ``edgefleet release trust`` writes), the release is for the device's class, and every file
   has the size and SHA-256 the manifest says, with no file the manifest does not name
   (:class:`contracts.release.ReleaseVerifier`, the same rules a node applies).

A refusal is a :class:`BundleError` whose ``reason`` is the OtaEvent reason: a release reason
code (``bad_signature``, ``unknown_key``, ``revoked_key``, ``downgrade``, ``bad_hash``,
``bad_size``, ``malformed``, ``wrong_class_or_board``) or ``download``.

Verified bundles are kept in :class:`BundleCache` by SHA-256, extracted (the image packer reads a
release directory), bounded in size (least recently used first out, never one in use), and
verified again when taken from the cache, so a cached bundle is never downloaded twice and a
file changed on the card since is never relayed.

Pure parts (:func:`read_bundle`, :func:`verify_bundle`) take bytes; they are the fleet's own
reader and checks (:func:`contracts.release.read_bundle`, :func:`contracts.release.verify_files`)
with the refusal turned into a :class:`BundleError`. I/O is :func:`download` and the cache; the
cache's calls block on the card and hash every file, so the gateway runs them in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import httpx

from contracts import release
from contracts.durable import fsync_dir, write_atomic, write_json_atomic
from contracts.release import (
    REASON_SLUGS,
    KeySet,
    Manifest,
    ReleaseError,
    ReleaseVerifier,
    parse_version,
)

__all__ = [
    "BundleCache",
    "BundleError",
    "download",
    "load_trust",
    "read_bundle",
    "reason_of",
    "verify_bundle",
    "verify_directory",
]

log = logging.getLogger(__name__)

VERIFIED_MARK = ".verified"  # written last into a cache entry: its presence means complete
_last_touch_ns = 0


def _touch(mark: Path) -> None:
    """Stamp a cache entry as used now, with a nanosecond time that never repeats: the file
    system's own stamp is a clock tick (several ms), so two uses within one tick would tie and
    the least recently used one could be the wrong one."""
    global _last_touch_ns
    _last_touch_ns = max(time.time_ns(), _last_touch_ns + 1)
    os.utime(mark, ns=(_last_touch_ns, _last_touch_ns))
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)


class BundleError(Exception):
    """A bundle the gateway will not relay; ``reason`` is the OtaEvent ``failed`` reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def reason_of(exc: ReleaseError) -> str:
    """A release refusal as a reason code: ``BadSignature`` -> ``bad_signature``."""
    return REASON_SLUGS[type(exc).code]


def load_trust(path: Path) -> ReleaseVerifier:
    """The trust file ``edgefleet release trust`` writes: ``{"keys": key set, "floor": [..]}``.
    Raises ValueError naming the file."""
    try:
        data = json.loads(path.read_text())
        floor = data["floor"]
        keys = KeySet.from_json(data["keys"])
        version = parse_version(".".join(str(int(p)) for p in floor))
    except (OSError, ValueError, KeyError, TypeError, ReleaseError) as exc:
        raise ValueError(f"{path}: not a release trust file ({exc}); write one with "
                         "`edgefleet release trust`") from None
    return ReleaseVerifier(keys, version)


# -- pure ---------------------------------------------------------------------------------------
def read_bundle(data: bytes) -> dict[str, bytes]:
    """The files of a release bundle (tar bytes) by relative path
    (:func:`contracts.release.read_bundle`); :class:`BundleError` (``malformed``) for anything
    but plain files and directories with safe relative names."""
    try:
        return release.read_bundle(data)
    except ReleaseError as exc:
        raise BundleError(reason_of(exc), exc.detail) from None


def verify_bundle(files: Mapping[str, bytes], verifier: ReleaseVerifier, *,
                  device_class: str | None = None) -> Manifest:
    """Signature, target and every file, as a node checks them
    (:func:`contracts.release.verify_files`); :class:`BundleError` with the release reason."""
    try:
        return release.verify_files(files, verifier, device_class=device_class)
    except ReleaseError as exc:
        raise BundleError(reason_of(exc), exc.detail) from None


def verify_directory(release: Path, verifier: ReleaseVerifier, *,
                     device_class: str | None = None) -> Manifest:
    """:func:`verify_bundle` on an extracted release directory (a cache entry)."""
    files = {p.relative_to(release).as_posix(): p.read_bytes()
             for p in sorted(release.rglob("*")) if p.is_file() and p.name != VERIFIED_MARK}
    return verify_bundle(files, verifier, device_class=device_class)


# -- download -----------------------------------------------------------------------------------
async def download(url: str, token: str | None, size: int, sha256: str, *,
                   timeout_s: float = 60.0, retries: int = 3,
                   transport: httpx.AsyncBaseTransport | None = None,
                   sleep: Callable[[float], object] = asyncio.sleep) -> bytes:
    """The bundle at ``url``, checked to be ``size`` bytes with ``sha256``.

    Transport errors, time-outs and 408/425/429/5xx answers are tried again ``retries`` times
    with a growing pause; other HTTP errors (401, 403, 404) are final. A body of the wrong size
    or hash is tried again too (a proxy may have cut it), then refused as ``bad_size`` /
    ``bad_hash``; everything else that fails is ``download``. The token is sent, never logged.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    last = BundleError("download", "not tried")
    async with httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                 follow_redirects=True) as client:
        for attempt in range(retries + 1):
            if attempt:
                pause = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
                log.info("bundle download: try %d of %d in %g s (%s)", attempt + 1,
                         retries + 1, pause, last.detail)
                result = sleep(pause)
                if asyncio.iscoroutine(result):
                    await result
            try:
                return await _fetch_once(client, url, headers, size, sha256)
            except _Final as exc:
                raise exc.error from None
            except BundleError as exc:
                last = exc
    raise last


class _Final(Exception):
    def __init__(self, error: BundleError) -> None:
        self.error = error


async def _fetch_once(client: httpx.AsyncClient, url: str, headers: Mapping[str, str],
                      size: int, sha256: str) -> bytes:
    digest = hashlib.sha256()
    body = bytearray()
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                error = BundleError("download", f"HTTP {response.status_code} from the fleet")
                if response.status_code in RETRY_STATUS:
                    raise error
                raise _Final(error)
            async for chunk in response.aiter_bytes():
                body += chunk
                digest.update(chunk)
                if len(body) > size:
                    break
    except httpx.HTTPError as exc:
        raise BundleError("download", f"{type(exc).__name__}: {exc}") from None
    if len(body) != size:
        raise BundleError("bad_size", f"the bundle is {len(body)}{'+' if len(body) > size else ''}"
                          f" bytes, the command says {size}")
    if digest.hexdigest() != sha256:
        raise BundleError("bad_hash", f"the bundle's SHA-256 is {digest.hexdigest()[:16]}..., "
                          f"the command says {sha256[:16]}...")
    return bytes(body)


# -- the cache ----------------------------------------------------------------------------------
class BundleCache:
    """Verified release directories under ``root/<sha256>/``, at most ``max_bytes`` in all.

    An entry is written into a temporary directory and renamed into place, its mark written
    last; a half-written entry (a power cut) has no mark and is removed when met.

    The gateway calls it from worker threads (a slow card must not hold up the event loop), so
    one lock makes each call whole: without it one bundle's eviction swept another's temporary
    directory away while it was being written."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.RLock()

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def get(self, sha256: str, verifier: ReleaseVerifier, *,
            device_class: str | None = None) -> tuple[Path, Manifest] | None:
        """The cached release for ``sha256``, verified again now; None when absent. A cached
        entry that no longer verifies (changed on disk) is removed and reported as absent."""
        with self._lock:
            return self._get(sha256, verifier, device_class)

    def _get(self, sha256: str, verifier: ReleaseVerifier,
             device_class: str | None) -> tuple[Path, Manifest] | None:
        entry = self.path(sha256)
        if not (entry / VERIFIED_MARK).exists():
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            return None
        try:
            manifest = verify_directory(entry, verifier, device_class=device_class)
        except BundleError as exc:
            if exc.reason in ("wrong_class_or_board", "downgrade", "unknown_key",
                              "revoked_key"):
                raise  # the bundle is intact; it is this delivery that is refused
            log.error("cached bundle %s no longer verifies (%s); removing it", sha256[:16], exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        except OSError as exc:
            log.error("cached bundle %s is unreadable (%s); removing it", sha256[:16], exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        _touch(entry / VERIFIED_MARK)  # recently used
        return entry, manifest

    def put(self, sha256: str, files: Mapping[str, bytes], keep: Iterable[str] = ()) -> Path:
        """Store verified ``files``; older entries (not in ``keep``) go when over the bound."""
        with self._lock:
            return self._put(sha256, files, keep)

    def _put(self, sha256: str, files: Mapping[str, bytes], keep: Iterable[str]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.path(sha256)
        tmp = self.root / f".{sha256}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for name, body in files.items():
            write_atomic(tmp / name, body, mode=0o644)
        write_json_atomic(tmp / VERIFIED_MARK, {"sha256": sha256, "at": time.time()})
        _touch(tmp / VERIFIED_MARK)
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
        fsync_dir(self.root)
        self._evict(keep={sha256, *keep})
        return entry

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) \
            if self.root.exists() else 0

    def evict(self, keep: Iterable[str] = ()) -> list[str]:
        """Remove the least recently used entries (never those in ``keep``) while over the
        bound; the names removed."""
        with self._lock:
            return self._evict(keep)

    def _evict(self, keep: Iterable[str]) -> list[str]:
        if not self.root.exists():
            return []
        keep = set(keep)
        entries = []
        for entry in self.root.iterdir():
            if entry.name.startswith("."):  # a temporary left by a crash
                shutil.rmtree(entry, ignore_errors=True)
                continue
            mark = entry / VERIFIED_MARK
            used = mark.stat().st_mtime_ns if mark.exists() else 0
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            entries.append((used, entry.name, size))
        total = sum(size for _, _, size in entries)
        removed = []
        for _, name, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if name in keep:
                continue
            shutil.rmtree(self.root / name, ignore_errors=True)
            total -= size
            removed.append(name)
            log.info("bundle cache: removed %s (least recently used) to stay within %d bytes",
                     name[:16], self.max_bytes)
        return removed

