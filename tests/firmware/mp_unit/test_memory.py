# Footprint on the device: the whole node must stay under a 64 KB peak heap, so each class
# ruff: noqa: I001  (mptest must be imported first: it puts firmware/ on sys.path)
# instance (filters, buffers, parser) must stay small. Measured on the MicroPython unix port
# (64-bit: object sizes there are larger than on the ESP32, so the limit is conservative).
import gc

import mptest
from fakes import Clock, FakeHal, loop_counts, ntc_counts, pms_frame, scd41_response

from app.regbank import RegBank

LIMIT = 8 * 1024   # bytes per class instance, bank excluded


def _hal():
    hal = FakeHal()
    for ch in ("smoke", "heat", "level", "pressure", "ph", "turbidity", "chlorine"):
        hal.counts[ch] = loop_counts(12.0)
    hal.counts["heat"] = ntc_counts(25.0)
    hal.i2c_reply = scd41_response(600, 22.0, 40.0)
    return hal


def _footprint(module, cls_name, class_name):
    mod = __import__("app.classes." + module, None, None, [cls_name])
    cls = getattr(mod, cls_name)
    hal = _hal()
    bank = RegBank(class_name)
    clock = Clock()
    gc.collect()
    before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    obj = cls(hal, bank)
    for _ in range(5):
        hal.uart.append(pms_frame(5, 10, 15))
        obj.sample(clock.tick())
    gc.collect()
    after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    assert obj.internal_errors == 0
    return after - before, obj


def test_each_class_instance_is_small():
    for module, cls_name in (("fire", "Fire"), ("flood", "Flood"), ("water", "Water"),
                             ("air", "Air")):
        size, _obj = _footprint(module, cls_name, module)
        print(module, "instance bytes:", size)
        assert size < LIMIT, (module, size)


mptest.run(globals())
