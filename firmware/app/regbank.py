# The node's register bank: input registers (measurements, health), holding registers
# (configuration, thresholds) and coils, laid out by the generated hwdef tables.
#
# Runs on MicroPython (ESP32 and the unix port) and on CPython. Storage is pre-allocated
# (array / bytearray) so the Modbus slave can answer reads without allocating per register.

from array import array

from app import hwdef

_U16, _I16, _U32 = 0, 1, 2


def _to_raw(value, kind, mul):
    # Engineering value -> unsigned register word(s) as an int, clamped to the type's range:
    # a saturated reading is better than a wrapped one (a wrapped smoke value reads as clean air).
    raw = int(round(value * mul))
    if kind == _I16:
        if raw < -32768:
            raw = -32768
        elif raw > 32767:
            raw = 32767
        return raw & 0xFFFF
    if raw < 0:
        raw = 0
    if kind == _U32:
        return raw if raw <= 0xFFFFFFFF else 0xFFFFFFFF
    return raw if raw <= 0xFFFF else 0xFFFF


_MULTIPLIERS = (1, 10, 100, 1000)


def class_map(name):
    """The register tables of one class (the generated app/maps/<name>.py), imported on first
    use. Here, not in the generated app/hwdef.py: a module with a function keeps its top-level
    bytecode alive on MicroPython, and hwdef is data only."""
    return __import__("app.maps." + name, None, None, ["CLASS"]).CLASS


def _u16(table, addr):
    """Entry addr of a generated u16 table (bytes, big-endian; see app/maps/*.py)."""
    return (table[2 * addr] << 8) | table[2 * addr + 1]


def unpack(reg):
    """A packed register (see app/maps/*.py) -> (address, type, multiplier)."""
    return reg & 0xFF, (reg >> 8) & 3, _MULTIPLIERS[(reg >> 10) & 3]


class RegBank:
    """Registers of one node class. Names come from hardware/registers/*.toml."""

    def __init__(self, class_name):
        spec = class_map(class_name)
        self.class_name = class_name
        self.class_id = spec["id"]
        self._inputs = spec["input"]
        self._holdings = spec["holding"]
        self._default = spec["hold_default"]
        self._min = spec["hold_min"]
        self._max = spec["hold_max"]
        self.input = array("H", [0] * spec["input_count"])
        self.holding = array("H", [0] * spec["holding_count"])
        self.coils = bytearray(len(hwdef.COILS))
        self.load_defaults()

    # -- inputs -------------------------------------------------------------------------
    def set(self, name, value):
        """Store an engineering value into the input register(s) called name."""
        addr, kind, mul = unpack(self._inputs[name])
        raw = _to_raw(value, kind, mul)
        if kind == _U32:
            self.input[addr] = raw >> 16
            self.input[addr + 1] = raw & 0xFFFF
        else:
            self.input[addr] = raw

    def get(self, name):
        """Read back an input register as an engineering value."""
        addr, kind, mul = unpack(self._inputs[name])
        raw = self.input[addr]
        if kind == _U32:
            raw = (raw << 16) | self.input[addr + 1]
        elif kind == _I16 and raw & 0x8000:
            raw -= 0x10000
        return raw / mul if mul != 1 else raw

    # -- holdings -----------------------------------------------------------------------
    def load_defaults(self):
        for addr in range(len(self.holding)):
            self.holding[addr] = _u16(self._default, addr)

    def threshold(self, name):
        """A holding register as an engineering value (thresholds, periods)."""
        addr, _kind, mul = unpack(self._holdings[name])
        raw = self.holding[addr]
        return raw / mul if mul != 1 else raw

    def set_holding(self, name, value):
        addr, kind, mul = unpack(self._holdings[name])
        self.holding[addr] = _to_raw(value, kind, mul)

    def check_write(self, address, values):
        """None when every value may be written at address.., else a Modbus exception code:
        2 (illegal data address) for an unknown register, 3 (illegal data value) for a value
        outside the register's declared range."""
        lo, hi = self._min, self._max
        for i in range(len(values)):
            a = address + i
            if a >= len(self.holding):
                return 2
            low = _u16(lo, a)
            high = _u16(hi, a)
            if low > high:
                return 2                    # no register at this address
            if not low <= values[i] <= high:
                return 3
        return None

    def config(self):
        """The persistent part of the holding bank (everything but the command register)."""
        out = {}
        for name, reg in self._holdings.items():
            if name != "command":
                out[name] = self.holding[reg & 0xFF]
        return out

    def apply_config(self, stored):
        """Apply a stored {name: raw} dict; unknown names and out-of-range values are skipped
        and counted, so an old config file never bricks a node. Returns the number skipped."""
        skipped = 0
        for name, raw in stored.items():
            reg = self._holdings.get(name)
            if reg is None or name == "command" or not isinstance(raw, int):
                skipped += 1
                continue
            addr = reg & 0xFF
            if not _u16(self._min, addr) <= raw <= _u16(self._max, addr):
                skipped += 1
                continue
            self.holding[addr] = raw
        return skipped
