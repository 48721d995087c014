# Runs on the MicroPython unix port (bench_ota.py starts it): time app.ota_verify on a real
# signed release. argv: RELEASE_DIR TRUST_JSON ROUNDS. Prints one JSON line of timings (ms).
import gc
import json
import sys
import time

from app import ota_verify


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def main(folder, trust_file, rounds):
    with open(trust_file) as fh:
        trust = json.load(fh)
    manifest = read(folder + "/manifest.json")
    sig = read(folder + "/manifest.sig")
    ota_verify.verify_manifest(manifest, sig, trust, "fire", "esp32")   # warm up, and must pass
    times = []
    for _ in range(rounds):
        # no gc.collect() here: under the device's small heap the collector runs inside the
        # verification as it will on the device, and that cost belongs to the measurement
        t0 = time.ticks_us()
        ota_verify.verify_manifest(manifest, sig, trust, "fire", "esp32")
        times.append(time.ticks_diff(time.ticks_us(), t0) / 1000)
    times.sort()
    gc.collect()
    t0 = time.ticks_us()
    body = ota_verify.verify_slot(folder + "/files", manifest, sig, trust, "fire", "esp32")
    slot_ms = time.ticks_diff(time.ticks_us(), t0) / 1000
    print(json.dumps({"median": times[len(times) // 2], "min": times[0], "max": times[-1],
                      "slot": slot_ms, "files": len(body["files"]),
                      "manifest_bytes": len(manifest)}))


main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
