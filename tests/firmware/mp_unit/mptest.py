# A tiny test runner for scripts that run on the MicroPython unix port (and on CPython).
#
# Each test_*.py script in this folder imports it first (which also puts <repo>/firmware on
# sys.path, so `from app import ...` works however the script is started), defines test_*
# functions with plain asserts, and ends with `mptest.run(globals())`: it prints one line per
# failure, then "N passed, M failed", and exits non-zero when anything failed.

import sys

_here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
_firmware = _here + "/../../../firmware"
if _firmware not in sys.path:
    sys.path.insert(0, _firmware)


def approx(a, b, tol):
    return a is not None and b is not None and abs(a - b) <= tol


def run(namespace):
    passed = failed = 0
    names = sorted(k for k in namespace if k.startswith("test_"))
    for name in names:
        try:
            namespace[name]()
            passed += 1
        except Exception as e:  # AssertionError and anything else: report and carry on
            failed += 1
            print("FAIL", name, type(e).__name__, e)
            if hasattr(sys, "print_exception"):
                sys.print_exception(e)
            else:
                import traceback
                traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    if failed:
        sys.exit(1)
