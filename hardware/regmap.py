"""The register maps: load the TOML declarations in ``hardware/registers`` and render them.

This module owns the contract between a node and its gateway. Everything else reads the maps
through :func:`load_maps`; the firmware gets a generated module (``firmware/app/hwdef.py``) and
technicians get ``docs/registers.md``, both produced by :func:`render_firmware` /
:func:`render_docs` and checked for freshness by the tests.
"""

from __future__ import annotations

import itertools
import pprint
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

HARDWARE_DIR = Path(__file__).resolve().parent
REGISTERS_DIR = HARDWARE_DIR / "registers"
SENSORS_FILE = HARDWARE_DIR / "sensors.toml"
BOARDS_DIR = HARDWARE_DIR / "boards"
CLASS_NAMES = ("fire", "flood", "water", "air")

RegType = Literal["u16", "i16", "u32"]
_TYPE_CODES: dict[str, int] = {"u16": 0, "i16": 1, "u32": 2}
_TYPE_WIDTH: dict[str, int] = {"u16": 1, "i16": 1, "u32": 2}
# A class register's address is packed into 8 bits in the firmware's constants (see
# pack_register); the OTA window (common.toml [ota]) is laid out apart and is not packed.
MAX_CLASS_ADDRESS = 255


class RegisterMapError(ValueError):
    """A register-map file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Register:
    """One input or holding register (a u32 spans two addresses)."""

    address: int
    name: str
    type: RegType
    desc: str
    scale: float = 1.0
    unit: str = ""
    default: float | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def width(self) -> int:
        return _TYPE_WIDTH[self.type]

    @property
    def multiplier(self) -> int:
        """Encoded = round(value * multiplier); scales are decimal fractions (1, 0.1, 0.01)."""
        return round(1 / self.scale)

    def encode(self, value: float) -> list[int]:
        """Engineering value -> register words (big-endian for u32)."""
        raw = round(value * self.multiplier)
        if self.type == "u32":
            raw &= 0xFFFFFFFF
            return [raw >> 16, raw & 0xFFFF]
        if self.type == "i16":
            if not -32768 <= raw <= 32767:
                raise ValueError(f"{self.name}: {value} does not fit an i16 at scale {self.scale}")
            return [raw & 0xFFFF]
        if not 0 <= raw <= 0xFFFF:
            raise ValueError(f"{self.name}: {value} does not fit a u16 at scale {self.scale}")
        return [raw]

    def decode(self, words: list[int]) -> float:
        """Register words -> engineering value."""
        if self.type == "u32":
            raw = (words[0] << 16) | words[1]
        elif self.type == "i16":
            raw = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
        else:
            raw = words[0]
        return raw / self.multiplier if self.multiplier != 1 else float(raw)


@dataclass(frozen=True)
class Bit:
    bit: int
    name: str
    desc: str
    severity: str = ""


@dataclass(frozen=True)
class ClassMap:
    """The full map of one device class: common blocks plus the class blocks."""

    class_id: int
    name: str
    title: str
    input: tuple[Register, ...]
    holding: tuple[Register, ...]
    alarm_bits: tuple[Bit, ...]
    fault_bits: tuple[Bit, ...]

    def input_register(self, name: str) -> Register:
        return _by_name(self.input, name)

    def holding_register(self, name: str) -> Register:
        return _by_name(self.holding, name)

    @property
    def input_count(self) -> int:
        last = max(self.input, key=lambda r: r.address)
        return last.address + last.width

    @property
    def holding_count(self) -> int:
        last = max(self.holding, key=lambda r: r.address)
        return last.address + last.width

    def decode_inputs(self, words: list[int]) -> dict[str, float]:
        """Decode a block of input registers read from address 0."""
        return {r.name: r.decode(words[r.address : r.address + r.width]) for r in self.input
                if r.address + r.width <= len(words)}


@dataclass(frozen=True)
class OtaRegister:
    """A register (or block of words) of the OTA window."""

    address: int
    name: str
    words: int
    desc: str


@dataclass(frozen=True)
class OtaWindow:
    """The OTA register window (common.toml ``[ota]``): far above every class block, not part
    of a node's configuration; how a master moves an image stream into a node."""

    max_chunk_bytes: int
    holding: tuple[OtaRegister, ...]
    input: tuple[OtaRegister, ...]
    states: dict[str, int]
    controls: dict[str, int]
    meanings: dict[str, str] = field(default_factory=dict)  # state and control names

    def holding_register(self, name: str) -> OtaRegister:
        return next(r for r in self.holding if r.name == name)

    def input_register(self, name: str) -> OtaRegister:
        return next(r for r in self.input if r.name == name)

    @property
    def base(self) -> int:
        return min(r.address for r in self.holding + self.input)

    @property
    def input_words(self) -> int:
        last = max(self.input, key=lambda r: r.address)
        return last.address + last.words - self.base


@dataclass(frozen=True)
class Maps:
    map_version: int
    common_input: tuple[Register, ...]
    common_holding: tuple[Register, ...]
    status_bits: tuple[Bit, ...]
    coils: tuple[Bit, ...]
    commands: dict[str, int]
    ota: OtaWindow
    classes: dict[str, ClassMap] = field(default_factory=dict)

    def by_id(self, class_id: int) -> ClassMap:
        for cmap in self.classes.values():
            if cmap.class_id == class_id:
                return cmap
        raise KeyError(f"no device class {class_id}")


def _by_name(regs: tuple[Register, ...], name: str) -> Register:
    for reg in regs:
        if reg.name == name:
            return reg
    raise KeyError(name)


def _register(entry: dict[str, Any], where: str) -> Register:
    try:
        reg_type = entry.get("type", "u16")
        if reg_type not in _TYPE_CODES:
            raise RegisterMapError(f"{where}: type {reg_type!r} is not one of u16, i16, u32")
        return Register(
            address=int(entry["address"]),
            name=str(entry["name"]),
            type=reg_type,
            desc=str(entry["desc"]),
            scale=float(entry.get("scale", 1.0)),
            unit=str(entry.get("unit", "")),
            default=entry.get("default"),
            minimum=entry.get("min"),
            maximum=entry.get("max"),
        )
    except KeyError as exc:
        raise RegisterMapError(f"{where}: missing field {exc.args[0]!r}") from None


def _bits(entries: list[dict[str, Any]], where: str) -> tuple[Bit, ...]:
    try:
        return tuple(Bit(int(e["bit"]), str(e["name"]), str(e["desc"]), str(e.get("severity", "")))
                     for e in entries)
    except KeyError as exc:
        raise RegisterMapError(f"{where}: a bit is missing field {exc.args[0]!r}") from None


def _registers(doc: dict[str, Any], key: str, path: Path) -> tuple[Register, ...]:
    return tuple(_register(e, f"{path.name} {key}[{i}] ({e.get('name', '?')})")
                 for i, e in enumerate(doc.get(key, [])))


def _check_layout(regs: tuple[Register, ...], where: str) -> None:
    used: dict[int, str] = {}
    names: set[str] = set()
    for reg in regs:
        if reg.name in names:
            raise RegisterMapError(f"{where}: register name {reg.name!r} declared twice")
        names.add(reg.name)
        if not 0 <= reg.address <= reg.address + reg.width - 1 <= MAX_CLASS_ADDRESS:
            raise RegisterMapError(
                f"{where}: {reg.name!r} at address {reg.address} outside 0-{MAX_CLASS_ADDRESS} "
                "(the firmware packs a register's address into 8 bits)")
        for addr in range(reg.address, reg.address + reg.width):
            if addr in used:
                raise RegisterMapError(
                    f"{where}: {reg.name!r} overlaps {used[addr]!r} at address {addr}")
            used[addr] = reg.name
        if reg.default is not None:
            lo = reg.minimum if reg.minimum is not None else float("-inf")
            hi = reg.maximum if reg.maximum is not None else float("inf")
            if not lo <= reg.default <= hi:
                raise RegisterMapError(f"{where}: {reg.name!r} default {reg.default} outside "
                                       f"[{reg.minimum}, {reg.maximum}]")
            reg.encode(reg.default)


_OTA_HOLDING = ("ota_offer", "ota_control", "ota_chunk")
_OTA_INPUT = ("ota_state", "ota_received", "ota_next_chunk", "ota_reason", "ota_version")
_OTA_STATES = ("idle", "receiving", "verify_pending", "staged", "refused")


def _ota_window(doc: dict[str, Any], path: Path) -> OtaWindow:
    """The [ota] table; the firmware relies on the register names, the states and the layout
    (one window base, inputs contiguous from it), so they are checked here."""
    where = f"{path.name} [ota]"
    ota = doc.get("ota")
    if not isinstance(ota, dict):
        raise RegisterMapError(f"{where}: missing")

    def regs(key: str, names: tuple[str, ...]) -> tuple[OtaRegister, ...]:
        try:
            out = tuple(OtaRegister(int(e["address"]), str(e["name"]), int(e.get("words", 1)),
                                    str(e["desc"])) for e in ota.get(key, []))
        except KeyError as exc:
            raise RegisterMapError(f"{where} {key}: a register is missing field "
                                   f"{exc.args[0]!r}") from None
        if tuple(r.name for r in out) != names:
            raise RegisterMapError(f"{where} {key}: expected registers {', '.join(names)}")
        for a, b in itertools.pairwise(out):
            if b.address != a.address + a.words:
                raise RegisterMapError(f"{where} {key}: {b.name!r} must follow {a.name!r}")
        return out

    try:
        window = OtaWindow(
            max_chunk_bytes=int(ota["max_chunk_bytes"]),
            holding=regs("holding", _OTA_HOLDING),
            input=regs("input", _OTA_INPUT),
            states={str(e["name"]): int(e["value"]) for e in ota.get("states", [])},
            controls={str(e["name"]): int(e["value"]) for e in ota.get("controls", [])},
            meanings={str(e["name"]): str(e["desc"])
                      for e in ota.get("states", []) + ota.get("controls", [])},
        )
    except KeyError as exc:
        raise RegisterMapError(f"{where}: missing field {exc.args[0]!r}") from None
    if tuple(window.states) != _OTA_STATES or list(window.states.values()) != list(range(5)):
        raise RegisterMapError(f"{where} states: expected {', '.join(_OTA_STATES)} = 0..4")
    if window.holding[0].address != window.input[0].address:
        raise RegisterMapError(f"{where}: ota_offer and ota_state share the window base")
    chunk = window.holding_register("ota_chunk")
    if not 2 <= window.max_chunk_bytes <= 2 * (chunk.words - 2) or window.max_chunk_bytes % 2:
        raise RegisterMapError(f"{where}: max_chunk_bytes must be even and fit ota_chunk")
    if chunk.address + chunk.words > 0xFFFF or chunk.words > 123:
        raise RegisterMapError(f"{where}: ota_chunk must fit one FC16 (123 words)")
    return window


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{path}: {exc}") from None


@cache
def load_maps(directory: Path = REGISTERS_DIR) -> Maps:
    """Load and validate every register map; raises RegisterMapError naming file and entry."""
    common_path = directory / "common.toml"
    common = _read_toml(common_path)
    common_input = _registers(common, "input", common_path)
    common_holding = _registers(common, "holding", common_path)
    maps = Maps(
        map_version=int(common["map_version"]),
        common_input=common_input,
        common_holding=common_holding,
        status_bits=_bits(common.get("status_bits", []), common_path.name),
        coils=tuple(Bit(int(c["address"]), str(c["name"]), str(c["desc"]))
                    for c in common.get("coils", [])),
        commands={str(c["name"]): int(c["value"]) for c in common.get("commands", [])},
        ota=_ota_window(common, common_path),
    )
    for name in CLASS_NAMES:
        path = directory / f"{name}.toml"
        doc = _read_toml(path)
        cmap = ClassMap(
            class_id=int(doc["class_id"]),
            name=str(doc["name"]),
            title=str(doc["title"]),
            input=common_input + _registers(doc, "input", path),
            holding=common_holding + _registers(doc, "holding", path),
            alarm_bits=_bits(doc.get("alarm_bits", []), path.name),
            fault_bits=_bits(doc.get("fault_bits", []), path.name),
        )
        _check_layout(cmap.input, f"{path.name} input")
        _check_layout(cmap.holding, f"{path.name} holding")
        if max(cmap.input_count, cmap.holding_count) > maps.ota.base:
            raise RegisterMapError(f"{path.name}: registers reach into the OTA window at "
                                   f"{maps.ota.base}")
        maps.classes[name] = cmap
    return maps


def load_sensors(path: Path = SENSORS_FILE) -> dict[str, Any]:
    return _read_toml(path)


def load_boards(directory: Path = BOARDS_DIR) -> dict[str, dict[str, Any]]:
    """Board pin maps, keyed by board name."""
    boards = {}
    for path in sorted(directory.glob("*.toml")):
        doc = _read_toml(path)
        boards[str(doc.pop("name"))] = doc
    return boards


# --------------------------------------------------------------------------- rendering

_FW_HEADER = '''\
# GENERATED by `edgefleet hw gen` from hardware/registers/*.toml and hardware/sensors.toml.
# Do not edit: change the TOML and regenerate; tests/hardware/test_regmap.py fails when stale.
'''

_CLASS_HEADER = '''\
# Packed for a small heap: a register is one small int (no heap object on the device),
#   address | type << 8 | scale << 10,  type 0 u16, 1 i16, 2 u32;  multiplier = 10 ** scale,
#   encoded = round(value * multiplier).
# Holding defaults and limits are bytes, one big-endian u16 per address (raw register values,
#   2 bytes an entry instead of an 8-byte tuple slot); an address without a register has
#   minimum 0xFFFF > maximum 0, so no value fits it.
'''

_SCALE_CODES = {1: 0, 10: 1, 100: 2, 1000: 3}


def pack_register(reg: Register) -> int:
    # An address above 8 bits would spill into the type bits and read back as another
    # register of another type: refuse it (load_maps already does, naming the file).
    if not 0 <= reg.address <= MAX_CLASS_ADDRESS:
        raise RegisterMapError(f"{reg.name}: address {reg.address} does not pack into 8 bits")
    return reg.address | _TYPE_CODES[reg.type] << 8 | _SCALE_CODES[reg.multiplier] << 10


def _u16_bytes(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def _fw_class(cmap: ClassMap) -> dict[str, Any]:
    count = cmap.holding_count
    default = [0] * count
    minimum = [0xFFFF] * count   # no register here: no value fits
    maximum = [0] * count
    for reg in cmap.holding:
        assert reg.default is not None and reg.minimum is not None and reg.maximum is not None
        default[reg.address] = round(reg.default * reg.multiplier)
        minimum[reg.address] = round(reg.minimum * reg.multiplier)
        maximum[reg.address] = round(reg.maximum * reg.multiplier)
        if not 0 <= minimum[reg.address] <= maximum[reg.address] <= 0xFFFF:
            raise RegisterMapError(f"{cmap.name}.{reg.name}: raw range outside u16")
    return {
        "id": cmap.class_id,
        "input": {r.name: pack_register(r) for r in cmap.input},
        "holding": {r.name: pack_register(r) for r in cmap.holding},
        "hold_default": _u16_bytes(default),
        "hold_min": _u16_bytes(minimum),
        "hold_max": _u16_bytes(maximum),
        "alarm_bits": {b.name: b.bit for b in cmap.alarm_bits},
        "fault_bits": {b.name: b.bit for b in cmap.fault_bits},
        "warning_mask": sum(1 << b.bit for b in cmap.alarm_bits if b.severity == "warning"),
        "input_count": cmap.input_count,
        "holding_count": count,
    }


def render_firmware(maps: Maps | None = None) -> str:
    """Source of firmware/app/hwdef.py: what every node needs, nothing MicroPython lacks.

    Data only: on MicroPython a module that defines a function keeps its whole top-level
    bytecode alive, so the loader for the class tables (``class_map``) lives in app/regbank.py.
    Each class's tables live in their own module (app/maps/<class>.py, :func:`render_class`),
    each sensor front-end's parameters in app/sensors/<name>.py (:func:`render_sensor`) and
    board pin maps in app/boards.py, so a node loads only what it uses: under a 64 KB heap
    every kilobyte of tables counts.
    """
    maps = maps or load_maps()
    parts = [
        _FW_HEADER,
        f"MAP_VERSION = {maps.map_version}\n",
        f"STATUS_BITS = {pprint.pformat({b.name: b.bit for b in maps.status_bits})}\n",
        f"COMMANDS = {pprint.pformat(maps.commands)}\n",
        f"COILS = {pprint.pformat({c.name: c.bit for c in maps.coils})}\n",
        f"CLASS_IDS = {pprint.pformat({n: c.class_id for n, c in maps.classes.items()})}\n",
        "# The OTA window (common.toml [ota]); the rest of it is in app/otadef.py, which only\n"
        "# the receiver (app/ota_rx.py) loads.\n"
        f"OTA_BASE = {maps.ota.base}\n",
        f"OTA_INPUTS = {maps.ota.input_words}\n",
    ]
    return "\n".join(parts)


def render_ota(maps: Maps | None = None) -> str:
    """Source of firmware/app/otadef.py: the OTA window as offsets from OTA_BASE, loaded only by
    the receiver (app/ota_rx.py) and the boot-time verifier (app/ota_boot.py)."""
    ota = (maps or load_maps()).ota
    base = ota.base
    offer, control, chunk = ota.holding
    lines = [_FW_HEADER, "# common.toml [ota]: offsets from hwdef.OTA_BASE\n",
             f"OFFER = {offer.address - base}", f"OFFER_WORDS = {offer.words}",
             f"CONTROL = {control.address - base}", f"CHUNK = {chunk.address - base}",
             f"MAX_CHUNK_BYTES = {ota.max_chunk_bytes}"]
    lines += [f"{name.upper()} = {value}" for name, value in ota.states.items()]
    lines += [f"{name.upper()} = {value}" for name, value in ota.controls.items()]
    return "\n".join(lines) + "\n"


def render_sensor(name: str, params: dict[str, Any]) -> str:
    """Source of firmware/app/sensors/<name>.py: one front-end's parameters as module globals
    (one dict on the device, no nested ones), from the [name] table of hardware/sensors.toml."""
    lines = [_FW_HEADER, f"# [{name}] of hardware/sensors.toml\n"]
    lines += [f"{key} = {value!r}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


def render_class(cmap: ClassMap) -> str:
    return (_FW_HEADER + _CLASS_HEADER + "\n" +
            f"CLASS = {pprint.pformat(_fw_class(cmap), width=100)}\n")


def render_boards() -> str:
    return _FW_HEADER + "\n" + f"BOARDS = {pprint.pformat(load_boards(), width=100)}\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_registers(regs: tuple[Register, ...], holding: bool) -> list[str]:
    if holding:
        lines = ["| address | 4xxxx | name | type | unit | scale | default | range | meaning |",
                 "|---|---|---|---|---|---|---|---|---|"]
    else:
        lines = ["| address | 3xxxx | name | type | unit | scale | meaning |",
                 "|---|---|---|---|---|---|---|"]
    for r in regs:
        span = str(r.address) if r.width == 1 else f"{r.address}-{r.address + r.width - 1}"
        ref = (40001 if holding else 30001) + r.address
        scale = "" if r.scale == 1 else f"{r.scale:g}"
        row = f"| {span} | {ref} | `{r.name}` | {r.type} | {r.unit} | {scale} |"
        if holding:
            row += f" {r.default:g} | {r.minimum:g}–{r.maximum:g} |"
        lines.append(row + f" {_md_escape(r.desc)} |")
    return lines


def _md_bits(bits: tuple[Bit, ...], with_severity: bool) -> list[str]:
    head = "| bit | name | severity | meaning |" if with_severity else "| bit | name | meaning |"
    lines = [head, "|---|---|---|---|" if with_severity else "|---|---|---|"]
    for b in bits:
        sev = f" {b.severity} |" if with_severity else ""
        lines.append(f"| {b.bit} | `{b.name}` |{sev} {_md_escape(b.desc)} |")
    return lines


def _md_ota(ota: OtaWindow) -> list[str]:
    def rows(regs: tuple[OtaRegister, ...], ref: int) -> list[str]:
        lines = ["| address | ref | name | words | meaning |", "|---|---|---|---|---|"]
        for r in regs:
            span = str(r.address) if r.words == 1 else f"{r.address}-{r.address + r.words - 1}"
            lines.append(f"| {span} | {ref + r.address} | `{r.name}` | {r.words} | "
                         f"{_md_escape(r.desc)} |")
        return lines

    return [
        "## OTA window (every class)",
        "",
        "How a master (the gateway, `gateway/ota_transfer.py`) moves a signed release into a "
        "node's inactive image slot: the release is packed as one byte stream "
        "(`hardware/ota_image.py`: manifest.json, manifest.sig, then every file with its path), "
        "offered, written in chunks of up to "
        f"{ota.max_chunk_bytes} bytes with a CRC-16 each, and committed; the node verifies the "
        "slot itself at its next boot (docs/firmware-boot.md). Status bit 2 (`ota`) is set while "
        "a transfer runs, waits for its verification, or a verified image waits for its boot. "
        "A write that does not fit gets a Modbus exception: 02 a chunk that is not the next "
        "one, 03 a bad offer, chunk length or chunk CRC (or a commit before the last chunk), "
        "04 no transfer running or a flash error, 06 a trial image runs (confirm it first); "
        "after any of them a master reads `ota_state` and `ota_next_chunk` and goes on from "
        "there. The holding registers are write-only.",
        "",
        "### Holding registers (FC16; `ota_control` also FC06)",
        "",
        *rows(ota.holding, 40001),
        "",
        "Controls (write to `ota_control`): "
        + ", ".join(f"`{v}` {n}" for n, v in ota.controls.items()) + ".",
        "",
        "### Input registers (FC04)",
        "",
        *rows(ota.input, 30001),
        "",
        "### OTA states (`ota_state`)",
        "",
        "| value | name | meaning |",
        "|---|---|---|",
        *[f"| {v} | `{n}` | {_md_escape(ota.meanings.get(n, ''))} |"
          for n, v in ota.states.items()],
        "",
    ]


def render_docs(maps: Maps | None = None) -> str:
    """docs/registers.md: tables a technician can read beside a Modbus tool."""
    maps = maps or load_maps()
    out = [
        "<!-- GENERATED by `edgefleet hw gen` from hardware/registers/*.toml. Do not edit. -->",
        "# edgefleet register maps",
        "",
        f"Register-map version **{maps.map_version}**. Serial defaults: 19200 baud, 8 data bits, "
        "even parity, 1 stop bit (8E1); node addresses 1–247; address 0 is broadcast (no reply).",
        "",
        "Addresses are protocol addresses (0-based, what goes on the wire). The `3xxxx`/`4xxxx` "
        "column is the 1-based reference many tools and SCADA packages show. Scaled values are "
        "integers on the wire: engineering value = register × scale. `i16` is two's complement; "
        "`u32` spans two registers, high word first.",
        "",
        "Function codes: 01 read coils, 03 read holding, 04 read input, 05 write coil, "
        "06 write holding, 15 write coils, 16 write holdings. Exceptions: 01 illegal function, "
        "02 illegal data address, 03 illegal data value (also a threshold outside its range), "
        "04 device failure.",
        "",
        "Example with libmodbus `mbpoll` (identity block of node 1):",
        "",
        "```",
        "mbpoll -m rtu -b 19200 -P even -a 1 -t 3 -0 -r 0 -c 16 -1 /dev/ttyUSB0",
        "```",
        "",
        "## Common blocks (every class)",
        "",
        "### Input registers (FC04)",
        "",
        *_md_registers(maps.common_input, False),
        "",
        "### Status bits (input register 5)",
        "",
        *_md_bits(maps.status_bits, False),
        "",
        "### Holding registers (FC03/06/16)",
        "",
        *_md_registers(maps.common_holding, True),
        "",
        "Commands (write to holding register 0): "
        + ", ".join(f"`{v}` {n}" for n, v in maps.commands.items()) + ".",
        "",
        "Thresholds written through Modbus are kept in flash with an atomic write "
        "(write a temporary file, then rename) and survive reboots.",
        "",
        "### Coils (FC01/05/15)",
        "",
        "| address | name | meaning |",
        "|---|---|---|",
        *[f"| {c.bit} | `{c.name}` | {_md_escape(c.desc)} |" for c in maps.coils],
        "",
    ]
    out += _md_ota(maps.ota)
    n_common_in = len(maps.common_input)
    n_common_hold = len(maps.common_holding)
    for cmap in maps.classes.values():
        out += [
            f"## Class {cmap.class_id}: {cmap.name} — {cmap.title}",
            "",
            "### Input registers (FC04)",
            "",
            *_md_registers(cmap.input[n_common_in:], False),
            "",
            "### Holding registers (FC03/06/16)",
            "",
            *_md_registers(cmap.holding[n_common_hold:], True),
            "",
            "### Alarm bits (input register 8)",
            "",
            *_md_bits(cmap.alarm_bits, True),
            "",
            "### Fault bits (input register 9)",
            "",
            *_md_bits(cmap.fault_bits, False),
            "",
        ]
    return "\n".join(out)


REPO_DIR = HARDWARE_DIR.parent
FIRMWARE_HWDEF = REPO_DIR / "firmware" / "app" / "hwdef.py"
DOCS_REGISTERS = REPO_DIR / "docs" / "registers.md"


def generated_files() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    maps = load_maps()
    files = {FIRMWARE_HWDEF: render_firmware(maps), DOCS_REGISTERS: render_docs(maps),
             FIRMWARE_HWDEF.parent / "otadef.py": render_ota(maps),
             FIRMWARE_HWDEF.parent / "boards.py": render_boards(),
             FIRMWARE_HWDEF.parent / "maps" / "__init__.py": _FW_HEADER}
    for name, cmap in maps.classes.items():
        files[FIRMWARE_HWDEF.parent / "maps" / f"{name}.py"] = render_class(cmap)
    files[FIRMWARE_HWDEF.parent / "sensors" / "__init__.py"] = _FW_HEADER
    for name, params in load_sensors().items():
        files[FIRMWARE_HWDEF.parent / "sensors" / f"{name}.py"] = render_sensor(name, params)
    return files
