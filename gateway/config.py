"""The gateway's configuration: one TOML file, validated at start-up.

This module owns the schema (pydantic models; unknown keys are errors, so a typo never silently
falls back to a default), the cross-checks against the register maps in ``hardware/`` (device
classes, alarm and register names, coils), and :func:`load_config`, whose errors name the file,
the line and the field: ``gateway.toml:14: bus[0].device[1].address: Input should be less than or
equal to 247``. ``tomllib`` keeps no positions, so :class:`TomlLocator` re-reads the text to map a
field path to the line that set it. Secrets are :class:`~pydantic.SecretStr` and never printed;
well-known default passwords are refused. Relative paths are relative to the config file.

``edgefleet gateway check CONFIG`` is :func:`check_main`.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.lineproto import Profile, ProfileError, load_profile
from hardware.regmap import ClassMap, load_maps

__all__ = [
    "DEFAULT_PASSWORDS",
    "BusConfig",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "GatewayConfig",
    "GatewaySection",
    "MqttConfig",
    "PollOverrides",
    "PollPlan",
    "RtuBusConfig",
    "RuleAction",
    "RuleCondition",
    "RuleConfig",
    "SerialInputConfig",
    "TcpBusConfig",
    "TomlLocator",
    "check_main",
    "load_config",
    "validate_config",
]

#: Passwords that ship with brokers, images and our own docs: refused inline and in files.
DEFAULT_PASSWORDS = frozenset({"admin", "password", "public", "mosquitto", "edgefleet",
                               "changeme", ""})

TopicId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Parity = Literal["N", "E", "O"]


# --------------------------------------------------------------------------- errors

class ConfigError(Exception):
    """The configuration is unusable; ``issues`` holds one located message per problem."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    field: str  # e.g. "bus[0].device[1].address"; "" for the file as a whole
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


def _fail(issues: list[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """Errors found by a model validator, each at its own field (not at the model)."""
    return ValidationError.from_exception_data("config", [
        InitErrorDetails(type=PydanticCustomError("config", "{msg}", {"msg": msg}), loc=loc,
                         input=None)
        for loc, msg in issues])


# --------------------------------------------------------------------------- paths

def _resolve(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- [gateway]

class GatewaySection(_Section):
    id: TopicId
    site: str = ""  # e.g. "HCMC District 1, Ben Nghe ward"
    location: str = ""
    storage: ConfigPath = Path("/var/lib/edgefleet/gateway")  # outbox database directory
    max_outbox_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 256
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0  # Prometheus; 0 = off


# --------------------------------------------------------------------------- [mqtt]

class MqttConfig(_Section):
    host: Name
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default 8883 with TLS, else 1883
    tls: bool = True
    cafile: ConfigPath | None = None
    certfile: ConfigPath | None = None  # this gateway's client certificate
    keyfile: ConfigPath | None = None
    keepalive: Annotated[int, Field(ge=5, le=65535)] = 30
    username: str | None = None
    password: SecretStr | None = None
    password_file: ConfigPath | None = None

    @field_validator("password")
    @classmethod
    def _no_default_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _refuse_default(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _coherent(self) -> MqttConfig:
        issues: list[tuple[tuple[str | int, ...], str]] = []
        tls_files = ("cafile", "certfile", "keyfile")
        if self.tls:
            issues += [((name,), "required when tls = true (each gateway has its own client "
                        "certificate)") for name in tls_files if getattr(self, name) is None]
        else:
            issues += [((name,), "set but tls = false: the connection would not use it")
                       for name in tls_files if getattr(self, name) is not None]
        if self.password is not None and self.password_file is not None:
            issues.append((("password_file",), "give password or password_file, not both"))
        if issues:
            raise _fail(issues)
        return self

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls else 1883

    def read_password(self) -> SecretStr | None:
        """The password, inline or from ``password_file`` (first line), defaults refused."""
        if self.password_file is None:
            return self.password
        secret = self.password_file.read_text(encoding="utf-8").splitlines()[0:1]
        value = secret[0].strip() if secret else ""
        try:
            _refuse_default(value)
        except ValueError as exc:
            raise ValueError(f"{self.password_file}: {exc}") from None
        return SecretStr(value)


def _refuse_default(password: str) -> None:
    if password.strip().lower() in DEFAULT_PASSWORDS:
        raise ValueError("no default passwords: this one is empty or well known "
                         "(admin, password, public, mosquitto, edgefleet, changeme); "
                         "set a unique password, or use password_file")


# --------------------------------------------------------------------------- [[bus]]

class PollOverrides(_Section):
    status_ms: Annotated[int, Field(ge=50, le=3_600_000)] | None = None
    telemetry_ms: Annotated[int, Field(ge=100, le=3_600_000)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=30)] | None = None
    max_backoff_s: Annotated[float, Field(ge=1, le=3600)] | None = None


@dataclass(frozen=True)
class PollPlan:
    """A device's effective polling: overrides, else class and bus defaults."""

    status_ms: int  # the alarm/status block
    telemetry_ms: int
    timeout_s: float
    max_backoff_s: float


_STATUS_MS_DEFAULT = {"fire": 500}  # a fire detector's alarm block is read twice a second


class DeviceConfig(_Section):
    address: Annotated[int, Field(ge=1, le=247)]
    device_class: str = Field(alias="class")
    id: TopicId
    location: str = ""
    poll: PollOverrides = PollOverrides()

    @field_validator("device_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        classes = load_maps().classes
        if value not in classes:
            raise ValueError(f"unknown device class {value!r}; the register maps declare "
                             f"{', '.join(classes)}")
        return value

    @property
    def class_map(self) -> ClassMap:
        return load_maps().classes[self.device_class]


class _BusBase(_Section):
    name: TopicId
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 0.5
    device: list[DeviceConfig] = []

    @model_validator(mode="after")
    def _unique_addresses(self) -> _BusBase:
        seen: dict[int, int] = {}
        issues: list[tuple[tuple[str | int, ...], str]] = []
        for index, dev in enumerate(self.device):
            if dev.address in seen:
                issues.append((("device", index, "address"),
                               f"address {dev.address} is already used by "
                               f"device[{seen[dev.address]}] on this bus"))
            seen.setdefault(dev.address, index)
        if issues:
            raise _fail(issues)
        return self

    def poll_plan(self, device: DeviceConfig) -> PollPlan:
        poll = device.poll
        return PollPlan(
            status_ms=poll.status_ms or _STATUS_MS_DEFAULT.get(device.device_class, 1000),
            telemetry_ms=poll.telemetry_ms or 5000,
            timeout_s=poll.timeout_s or self.timeout_s,
            max_backoff_s=poll.max_backoff_s or 30.0,
        )


class RtuBusConfig(_BusBase):
    type: Literal["rtu"]
    port: Name  # /dev/ttyUSB0, /dev/serial/by-id/...
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 19200
    parity: Parity = "E"  # the Modbus serial-line default, 8E1
    stopbits: Literal[1, 2] = 1


class TcpBusConfig(_BusBase):
    type: Literal["tcp"]
    host: Name
    port: Annotated[int, Field(ge=1, le=65535)] = 502


BusConfig = Annotated[RtuBusConfig | TcpBusConfig, Field(discriminator="type")]


# --------------------------------------------------------------------------- [[serial_input]]

class SerialInputConfig(_Section):
    """A panel's printer port (see gateway/lineproto.py)."""

    name: TopicId
    port: Name
    baudrate: Annotated[int, Field(ge=300, le=1_000_000)] = 9600
    parity: Parity = "N"
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1
    profile: Name  # a name from gateway/profiles, or a path to a .toml profile
    device_id: TopicId  # the panel's id in MQTT topics
    location: str = ""
    timezone: str | None = None  # the panel clock's zone, e.g. "Asia/Ho_Chi_Minh"
    _profile: Profile | None = PrivateAttr(default=None)

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        if "/" in value or value.endswith(".toml"):  # a path: kept resolved for later loads
            path = Path(value).expanduser()
            if not path.is_absolute() and base is not None:
                path = Path(base) / path
            value = str(path)
        try:
            load_profile(value)
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def parser_profile(self) -> Profile:
        if self._profile is None:  # constructed without validation
            self._profile = load_profile(self.profile)
        return self._profile


# --------------------------------------------------------------------------- [[rule]]

class RuleCondition(_Section):
    """``when``: one device or every device of a class; an alarm, a fault or a value."""

    device: TopicId | None = None
    device_class: str | None = Field(default=None, alias="class")
    site_any: bool | None = None  # with class: any device of the class on this gateway
    alarm: str | None = None  # an alarm bit name of the class, or "any"
    fault: str | None = None  # a fault bit name of the class, or "any"
    value: str | None = None  # an input register name, with above and/or below
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> RuleCondition:
        if (self.device is None) == (self.device_class is None):
            raise ValueError("give exactly one of device or class")
        if self.site_any is not None and self.device_class is None:
            raise ValueError("site_any applies to class = ..., not to one device")
        if self.site_any is False:
            raise ValueError("site_any = false is not supported: name one device instead")
        chosen = [k for k in ("alarm", "fault", "value") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of alarm, fault or value")
        if self.value is None and (self.above is not None or self.below is not None):
            raise ValueError("above/below apply to value = ...")
        if self.value is not None and self.above is None and self.below is None:
            raise ValueError("value needs above and/or below")
        return self


class RuleAction(_Section):
    """``then``: write a coil or a holding register on a Modbus device."""

    device: TopicId
    coil: int | str | None = None  # address or name from the common coils
    register_name: str | None = Field(default=None, alias="register")  # a holding register
    value: bool | float

    @model_validator(mode="after")
    def _shape(self) -> RuleAction:
        if (self.coil is None) == (self.register_name is None):
            raise ValueError("give exactly one of coil or register")
        if self.coil is not None and not isinstance(self.value, bool):
            raise _fail([(("value",), "a coil takes true or false")])
        if self.register_name is not None and isinstance(self.value, bool):
            raise _fail([(("value",), "a register takes a number")])
        return self


class RuleConfig(_Section):
    name: Name | None = None
    when: RuleCondition
    then: RuleAction
    release: Literal["auto", "manual"] = "auto"  # auto: undo when the condition clears


# --------------------------------------------------------------------------- the file

class GatewayConfig(_Section):
    gateway: GatewaySection
    mqtt: MqttConfig
    bus: list[BusConfig] = []
    serial_input: list[SerialInputConfig] = []
    rule: list[RuleConfig] = []

    def devices(self) -> Iterator[tuple[RtuBusConfig | TcpBusConfig, DeviceConfig]]:
        for bus in self.bus:
            for dev in bus.device:
                yield bus, dev

    def device(self, device_id: str) -> DeviceConfig:
        for _, dev in self.devices():
            if dev.id == device_id:
                return dev
        raise KeyError(device_id)

    @model_validator(mode="after")
    def _cross_check(self) -> GatewayConfig:
        issues: list[tuple[tuple[str | int, ...], str]] = []
        bus_names = Counter(bus.name for bus in self.bus)
        issues += [(("bus", i, "name"), f"bus name {bus.name!r} is used more than once")
                   for i, bus in enumerate(self.bus) if bus_names[bus.name] > 1]
        owners: dict[str, str] = {}
        for i, bus in enumerate(self.bus):
            for j, dev in enumerate(bus.device):
                where = f"bus[{i}].device[{j}]"
                if dev.id in owners:
                    issues.append((("bus", i, "device", j, "id"), f"device id {dev.id!r} is "
                                   f"already used by {owners[dev.id]}"))
                owners.setdefault(dev.id, where)
        panels: dict[str, SerialInputConfig] = {}
        for k, panel in enumerate(self.serial_input):
            if panel.device_id in owners:
                issues.append((("serial_input", k, "device_id"), f"device id "
                               f"{panel.device_id!r} is already used by {owners[panel.device_id]}"))
            owners.setdefault(panel.device_id, f"serial_input[{k}]")
            panels.setdefault(panel.device_id, panel)
        modbus: dict[str, DeviceConfig] = {}
        for _, dev in self.devices():
            modbus.setdefault(dev.id, dev)
        for r, rule in enumerate(self.rule):
            issues += [(("rule", r, *loc), msg) for loc, msg in
                       _check_rule(rule, modbus, panels)]
        if issues:
            raise _fail(issues)
        return self


def _check_rule(rule: RuleConfig, modbus: dict[str, DeviceConfig],
                panels: dict[str, SerialInputConfig],
                ) -> list[tuple[tuple[str | int, ...], str]]:
    issues: list[tuple[tuple[str | int, ...], str]] = []
    when, then = rule.when, rule.then
    maps = load_maps()
    cmap: ClassMap | None = None
    if when.device is not None:
        if when.device in panels:
            issues += _check_panel_condition(when, panels[when.device])
        elif when.device not in modbus:
            issues.append((("when", "device"), f"no device {when.device!r} in this config"))
        else:
            cmap = modbus[when.device].class_map
    elif when.device_class is not None:
        if when.device_class not in maps.classes:
            issues.append((("when", "class"), f"unknown device class {when.device_class!r}; "
                           f"the register maps declare {', '.join(maps.classes)}"))
        else:
            cmap = maps.classes[when.device_class]
    if cmap is not None:
        if when.alarm is not None and when.alarm != "any":
            names = [b.name for b in cmap.alarm_bits]
            if when.alarm not in names:
                issues.append((("when", "alarm"), f"class {cmap.name} has no alarm "
                               f"{when.alarm!r}; it has {', '.join(names)} (or \"any\")"))
        if when.fault is not None and when.fault != "any":
            names = [b.name for b in cmap.fault_bits]
            if when.fault not in names:
                issues.append((("when", "fault"), f"class {cmap.name} has no fault "
                               f"{when.fault!r}; it has {', '.join(names)} (or \"any\")"))
        if when.value is not None:
            names = [reg.name for reg in cmap.input]
            if when.value not in names:
                issues.append((("when", "value"), f"class {cmap.name} has no input register "
                               f"{when.value!r}; see docs/registers.md"))
    target = modbus.get(then.device)
    if target is None:
        what = ("is a serial input, which cannot be written" if then.device in panels
                else "is not in this config")
        issues.append((("then", "device"), f"device {then.device!r} {what}; the action needs a "
                       "Modbus device from a [[bus.device]]"))
    if then.coil is not None:
        coils = {c.bit: c.name for c in maps.coils}
        if then.coil not in coils and then.coil not in coils.values():
            issues.append((("then", "coil"), f"no coil {then.coil!r}; the coils are "
                           + ", ".join(f"{a} ({n})" for a, n in coils.items())))
    if then.register_name is not None and target is not None:
        try:
            reg = target.class_map.holding_register(then.register_name)
        except KeyError:
            names = [h.name for h in target.class_map.holding]
            issues.append((("then", "register"), f"class {target.device_class} has no holding "
                           f"register {then.register_name!r}; it has {', '.join(names)}"))
        else:
            value = float(then.value)
            lo = reg.minimum if reg.minimum is not None else float("-inf")
            hi = reg.maximum if reg.maximum is not None else float("inf")
            if not lo <= value <= hi:
                issues.append((("then", "value"), f"{value:g} is outside {reg.name}'s range "
                               f"{reg.minimum:g}–{reg.maximum:g} {reg.unit}".rstrip()))
    return issues


def _check_panel_condition(when: RuleCondition, panel: SerialInputConfig,
                           ) -> list[tuple[tuple[str | int, ...], str]]:
    kinds = {p.kind for p in panel.parser_profile.pattern}
    raising = sorted(kinds & {"fire", "prealarm", "supervisory"})
    if when.alarm is not None and when.alarm != "any" and when.alarm not in raising:
        return [(("when", "alarm"), f"panel {panel.device_id!r} (profile "
                 f"{panel.parser_profile.name}) raises {', '.join(raising)} (or \"any\"), "
                 f"not {when.alarm!r}")]
    if when.fault is not None and when.fault != "any":
        return [(("when", "fault"), "a panel's faults are matched with fault = \"any\"")]
    if when.value is not None:
        return [(("when", "value"), "a panel has no values, only events")]
    return []


# --------------------------------------------------------------------------- TOML positions

_TOKEN = re.compile(r'''
    (?P<ws>[ \t]+) | (?P<comment>\#[^\n]*) | (?P<nl>\r?\n)
  | (?P<str>"""[\s\S]*?"""(?!")|'\'\'[\s\S]*?\'\'\'(?!')|"(?:\\.|[^"\\\n])*"|'[^'\n]*')
  | (?P<punct>[\[\]{}=,.])
  | (?P<bare>[A-Za-z0-9_+:-]+)
  | (?P<other>.)
''', re.VERBOSE)

Loc = tuple[str | int, ...]


class TomlLocator:
    """Maps a field path (``("bus", 0, "device", 1, "address")``) to its line in the TOML text.

    A small scanner over *valid* TOML (tomllib has already accepted it): table headers, array of
    tables counted per parent instance, dotted keys, inline tables and arrays. Every table, key
    and array element is recorded with the line where it starts; :meth:`line_of` falls back to the
    nearest recorded ancestor (a missing key reports its table's header).
    """

    def __init__(self, text: str):
        self.lines: dict[Loc, int] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._tokens = [(m.lastgroup or "other", m.group(), m.start())
                        for m in _TOKEN.finditer(text) if m.lastgroup not in ("ws", "comment")]
        self._pos = 0
        self._arrays: dict[Loc, int] = {}
        with contextlib.suppress(IndexError):  # ran off the end: keep what was recorded
            self._document()

    def line_of(self, loc: Loc) -> int:
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    # -- scanner
    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def _peek(self) -> tuple[str, str, int]:
        return self._tokens[self._pos]

    def _next(self) -> tuple[str, str, int]:
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def _skip_newlines(self) -> None:
        while self._pos < len(self._tokens) and self._peek()[0] == "nl":
            self._pos += 1

    def _key(self) -> list[str]:
        parts = []
        while True:
            kind, text, _ = self._next()
            parts.append(text[1:-1] if kind == "str" else text)
            if self._peek()[1] != ".":
                return parts
            self._next()

    def _document(self) -> None:
        table: Loc = ()
        while True:
            self._skip_newlines()
            if self._pos >= len(self._tokens):
                return
            _, text, offset = self._peek()
            if text == "[":
                self._next()
                is_array = self._peek()[1] == "[" and self._peek()[2] == offset + 1
                if is_array:
                    self._next()
                parts = self._key()
                self._next()
                if is_array:
                    self._next()
                table = self._table(parts, is_array)
                self.lines.setdefault(table, self._line(offset))
            else:
                parts = self._key()
                self._next()  # "="
                self._value((*table, *parts), self._line(offset))

    def _concrete(self, prefix: Loc, part: str) -> Loc:
        path = (*prefix, part)
        count = self._arrays.get(path)
        return (*path, count - 1) if count else path

    def _table(self, parts: list[str], is_array: bool) -> Loc:
        path: Loc = ()
        for part in parts[:-1]:
            path = self._concrete(path, part)
        if not is_array:
            return self._concrete(path, parts[-1])
        path = (*path, parts[-1])
        index = self._arrays.get(path, 0)
        self._arrays[path] = index + 1
        return (*path, index)

    def _value(self, path: Loc, line: int) -> None:
        self.lines.setdefault(path, line)
        text = self._next()[1]
        if text == "{":
            while True:
                self._skip_newlines()
                _, text, offset = self._peek()
                if text == "}":
                    self._next()
                    return
                if text == ",":
                    self._next()
                    continue
                parts = self._key()
                self._next()  # "="
                self._value((*path, *parts), self._line(offset))
        elif text == "[":
            index = 0
            while True:
                self._skip_newlines()
                _, text, offset = self._peek()
                if text == "]":
                    self._next()
                    return
                if text == ",":
                    self._next()
                    continue
                self._value((*path, index), self._line(offset))
                index += 1
        else:  # a scalar: may be several tokens (3.14, 1979-05-27 07:32:00)
            while self._pos < len(self._tokens) and self._peek()[1] not in {",", "]", "}"} \
                    and self._peek()[0] != "nl":
                self._next()


# --------------------------------------------------------------------------- loading

_UNION_TAGS = {"rtu", "tcp"}
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def _normalise_loc(loc: Loc) -> Loc:
    # the discriminated bus union adds its tag: ("bus", 0, "rtu", "device", ...)
    if len(loc) > 2 and loc[0] == "bus" and loc[2] in _UNION_TAGS:
        return (*loc[:2], *loc[3:])
    return loc


def _field_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".")


def _message(error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    if error["type"] == "union_tag_invalid":
        return f"type must be one of {error['ctx']['expected_tags']}, not {error['ctx']['tag']!r}"
    return str(error["msg"])


def validate_config(text: str, file: str = "<config>", base_dir: Path | None = None,
                    ) -> GatewayConfig:
    """Parse and validate TOML text; ``file`` and ``base_dir`` name and anchor it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        position = _TOML_POSITION.search(message)
        line = int(position.group(1)) if position else text.count("\n") + 1
        if position:
            message = f"{message[:position.start()]} (column {position.group(2)})"
        raise ConfigError([ConfigIssue(file, line, "", f"TOML syntax: {message}")]) from None
    try:
        return GatewayConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        locator = TomlLocator(text)
        issues = []
        for error in exc.errors():
            loc = _normalise_loc(tuple(error["loc"]))
            if error["type"] == "union_tag_invalid":
                loc = (*loc, "type")
            issues.append(ConfigIssue(file, locator.line_of(loc), _field_path(loc),
                                      _message(error)))
        issues.sort(key=lambda issue: issue.line)
        raise ConfigError(issues) from None


def load_config(path: str | Path) -> GatewayConfig:
    """Load a gateway TOML file; raises :class:`ConfigError` naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), 1, "", f"cannot read: "
                                       f"{exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue(str(path), line, "", "not UTF-8 text")]) from None
    return validate_config(text, str(path), path.resolve().parent)


def missing_files(config: GatewayConfig) -> list[str]:
    """Files the config names that are absent here (certificates, password file)."""
    mqtt = config.mqtt
    named = {"mqtt.cafile": mqtt.cafile, "mqtt.certfile": mqtt.certfile,
             "mqtt.keyfile": mqtt.keyfile, "mqtt.password_file": mqtt.password_file}
    return [f"{field}: {path} does not exist" for field, path in named.items()
            if path is not None and not path.exists()]


def check_main(path: str) -> int:
    """``edgefleet gateway check CONFIG``: 0 and a summary if valid, else 1 and the errors."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    devices = sum(len(bus.device) for bus in config.bus)
    print(f"OK: {path}: gateway {config.gateway.id}: {len(config.bus)} bus(es), "
          f"{devices} device(s), {len(config.serial_input)} serial input(s), "
          f"{len(config.rule)} rule(s); broker {config.mqtt.host}:{config.mqtt.broker_port} "
          f"({'TLS' if config.mqtt.tls else 'no TLS'})")
    for warning in missing_files(config):
        print(f"warning: {path}: {warning} (needed on the gateway)", file=sys.stderr)
    return 0
