# Run the device's release check (app.ota_verify) on the MicroPython unix port, step by step:
#   micropython ota_check.py TRUST_JSON CLASS BOARD STEP...
# where STEP is "verify:DIR" (check the release in DIR, keep the trust) or "install:DIR" (check
# it and, if it passes, accept it: the trust moves on as a device's does after installing).
# One line per step: "<step> <reason code> <detail>"; then the final trust as JSON.
import json
import sys

from app import ota_verify


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def main(argv):
    with open(argv[1]) as fh:
        trust = json.load(fh)
    device_class, board = argv[2], argv[3]
    for step in argv[4:]:
        action, folder = step.split(":", 1)
        try:
            body = ota_verify.verify_slot(folder + "/files", read(folder + "/manifest.json"),
                                          read(folder + "/manifest.sig"), trust,
                                          device_class, board)
            code, detail = 0, "ok"
            if action == "install":
                trust = ota_verify.accept(trust, body)
        except ota_verify.Refused as exc:
            code, detail = exc.code, exc.detail
        print(step, code, detail)
    print(json.dumps(trust))


main(sys.argv)
