"""Real signed releases for the fleet's OTA tests: keys made with ``provisioning.release``,
release directories built and signed the way ``edgefleet release build|sign`` does, packed as
the uncompressed tar the fleet takes, and the fleet's trust file as ``edgefleet release trust``
writes it."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from contracts.release import Version, key_id
from provisioning.release import build, device_trust, generate_key, load_public, make_keyset, sign


def pack(release: Path, top: str | None = None) -> bytes:
    """The release directory as an uncompressed tar (optionally under one top directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(release.rglob("*")):
            if path.is_file():
                name = path.relative_to(release).as_posix()
                tar.add(path, arcname=f"{top}/{name}" if top else name)
    return buf.getvalue()


class ReleaseKit:
    """Three signing keys: ``good`` (trusted), ``stranger`` (unknown to the fleet) and ``old``
    (revoked in the fleet's trust); a tiny app to release; the fleet's trust file."""

    def __init__(self, root: Path, floor: Version = (1, 0, 0)) -> None:
        self.root = root
        keys = root / "keys"
        keys.mkdir(parents=True)
        self.keys = {name: keys / f"{name}.key" for name in ("good", "stranger", "old")}
        for path in self.keys.values():
            generate_key(path)
        self.app = root / "app"
        self.app.mkdir()
        (self.app / "main.py").write_text("print('edgefleet node')\n")
        (self.app / "lib.py").write_text("VALUE = 42\n")
        old_id = key_id(load_public(self.keys["old"].with_suffix(".pub")))
        keyset = make_keyset(2, [self.keys["good"].with_suffix(".pub")], [old_id])
        self.trust = root / "trust.json"
        self.trust.write_text(json.dumps(device_trust(keyset, floor)))
        self._n = 0

    def release(self, version: Version = (1, 4, 0), *, key: str | None = "good",
                device_class: str = "fire", min_version: Version = (1, 0, 0)) -> Path:
        self._n += 1
        out = self.root / f"rel-{self._n}"
        build(out, version=version, min_version=min_version, device_class=device_class,
              board="esp32", source=self.app, compiled=False)
        if key is not None:
            sign(out, self.keys[key])
        return out

    def bundle(self, version: Version = (1, 4, 0), **kw: object) -> bytes:
        return pack(self.release(version, **kw))  # type: ignore[arg-type]
