"""What the fleet side of an OTA looks like to a gateway, for tests: signed releases built with
provisioning.release and a throwaway key, bundled as the fleet serves them (an uncompressed tar
of the release directory), and a tiny HTTP server that hands them out against a bearer token."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from contracts.release import Version
from hardware.sim.simbus import SimBus
from provisioning import release as rel

TOKEN = "download-token-7f3a"  # what the fleet would put in the command


@dataclass(frozen=True)
class Keys:
    private: Path
    trust: Path  # the gateway's trust file, as `edgefleet release trust` writes it


def make_keys(directory: Path, name: str = "release-2026") -> Keys:
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{name}.key"
    rel.generate_key(private)
    keyset = rel.make_keyset(1, [private.with_suffix(".pub")], [])
    trust = directory / "trust.json"
    trust.write_text(json.dumps(rel.device_trust(keyset, (0, 0, 0))) + "\n")
    return Keys(private, trust)


BOARD = "unix"  # what the simulated nodes say they are (node.json "board")
FIRMWARE_APP = Path(__file__).resolve().parents[2] / "firmware" / "app"


def app_source(directory: Path, version: Version, *, broken: bool = False,
               tiny: bool = False) -> Path:
    """An application to release: the firmware app reporting ``version``; ``broken`` raises at
    import (its trial crashes and rolls back); ``tiny`` is only that broken node module and the
    version, a few hundred bytes to move (quick transfers whose trial then rolls back)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not tiny:
        shutil.copytree(FIRMWARE_APP, directory, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (directory / "version.py").write_text(f"VERSION = {tuple(version)!r}\n")
    if broken or tiny:
        node = directory / "node.py"
        rest = node.read_text() if node.exists() else ""
        node.write_text('raise ImportError("no module named app.lost")\n' + rest)
    return directory


def make_release(out: Path, keys: Keys, *, version: Version = (1, 4, 0),
                 device_class: str = "fire", source: Path | None = None) -> Path:
    """A signed release directory (the app copied as .py: no mpy-cross, it is fast)."""
    kwargs = {"source": source} if source is not None else {}
    rel.build(out, version=version, min_version=(0, 1, 0), device_class=device_class,
              board=BOARD, compiled=False, **kwargs)
    rel.sign(out, keys.private)
    return out


def flash_trust(sim: SimBus, keys: Keys) -> None:
    """Each node carries the fleet's release trust, as `edgefleet flash` writes it."""
    for node in sim.nodes:
        shutil.copyfile(keys.trust, node.root / "data" / "trust.json")


def bundle(release: Path, *, extra: dict[str, tarfile.TarInfo] | None = None) -> bytes:
    """The uncompressed tar of a release directory, as the fleet serves it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(release.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(release).as_posix())
        for info in (extra or {}).values():
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class BundleServer:
    """Serves bundles at ``/bundles/<name>`` to requests carrying ``Bearer TOKEN``; counts the
    requests; ``status`` forces an answer (a fleet in trouble)."""

    bundles: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, authorization)
    status: int | None = None

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization", "")
                server.requests.append((self.path, auth))
                body = server.bundles.get(self.path.removeprefix("/bundles/"))
                code = server.status or (401 if auth != f"Bearer {TOKEN}" else
                                         404 if body is None else 200)
                payload = body if code == 200 and body is not None else b"{}"
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/bundles/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
