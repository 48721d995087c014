"""The gateway config schema: pydantic models of the TOML file, one per section.

Unknown keys are errors (a typo never silently falls back to a default). Secrets are
:class:`~pydantic.SecretStr`, never printed; well-known default passwords are refused. Relative
paths are relative to the config file (``base_dir`` in the validation context). Whole-file
cross-checks (ids, rules against the register maps) are in :mod:`gateway.config.checks`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
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

from gateway.config.checks import cross_check
from gateway.lineproto import Profile, ProfileError, load_profile
from hardware.regmap import ClassMap, load_maps

DEFAULT_PASSWORDS = frozenset({"admin", "password", "public", "mosquitto", "edgefleet",
                               "changeme", ""})

TopicId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Parity = Literal["N", "E", "O"]
# /dev/serial/by-id/ names carry the adapter's vendor, model and serial number: often > 64 chars
DevicePath = Annotated[str, Field(min_length=1, max_length=4096)]


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

#: How long a node runs a trial image before it resets unconfirmed (the firmware's default,
#: _TRIAL_CONFIRM_S in firmware/app/node.py; tests/gateway/test_config.py holds the two equal).
NODE_TRIAL_CONFIRM_S = 900

class GatewaySection(_Section):
    id: TopicId
    site: str = ""  # e.g. "HCMC District 1, Ben Nghe ward"
    location: str = ""
    storage: ConfigPath = Path("/var/lib/edgefleet/gateway")  # outbox database directory
    max_outbox_mb: Annotated[float, Field(gt=0, le=1_000_000)] = 256
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0  # Prometheus; 0 = off
    # A node running a trial image is confirmed once polled healthy this long (gateway/trial.py);
    # 0 = never (confirm by hand through the fleet's command).
    confirm_trial_after_s: Annotated[float, Field(ge=0)] = 300

    @field_validator("confirm_trial_after_s")
    @classmethod
    def _confirm_before_the_node_gives_up(cls, value: float) -> float:
        if value >= NODE_TRIAL_CONFIRM_S:
            raise ValueError(
                f"must be below {NODE_TRIAL_CONFIRM_S} s: a node resets a trial image not "
                f"confirmed within {NODE_TRIAL_CONFIRM_S} s of uptime and rolls back after a "
                f"few boots, so every update would be undone (0 confirms by hand)")
        return value


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
    port: DevicePath  # /dev/ttyUSB0, /dev/serial/by-id/...
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
    port: DevicePath
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


# --------------------------------------------------------------------------- [ota]

class OtaSection(_Section):
    """Firmware updates relayed to the nodes (gateway/ota.py). Without this section the
    gateway refuses ``ota`` commands: it never relays a release it has no trust to check."""

    # The release trust this gateway checks bundles against: the JSON written by
    # `edgefleet release trust` (key set and anti-rollback floor), the same a node carries.
    trust: ConfigPath
    cache_dir: ConfigPath | None = None  # verified bundles by SHA-256; default <storage>/ota-cache
    cache_max_mb: Annotated[float, Field(gt=0, le=100_000)] = 64
    download_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60
    download_retries: Annotated[int, Field(ge=0, le=20)] = 3  # tries after the first
    offer_jitter_s: Annotated[float, Field(ge=0, le=3600)] = 10  # spread of transfer starts
    progress_interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 5  # `transferring` events
    # committed -> trial: how long the node may take to come back on the new image; and how
    # long a node that went silent mid-transfer is waited for before the delivery fails.
    boot_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 600
    device_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 600


# --------------------------------------------------------------------------- the file

class GatewayConfig(_Section):
    gateway: GatewaySection
    mqtt: MqttConfig
    bus: list[BusConfig] = []
    serial_input: list[SerialInputConfig] = []
    rule: list[RuleConfig] = []
    ota: OtaSection | None = None

    @property
    def ota_cache_dir(self) -> Path:
        """Where verified bundles are kept: ``[ota] cache_dir``, else ``<storage>/ota-cache``."""
        if self.ota is not None and self.ota.cache_dir is not None:
            return self.ota.cache_dir
        return self.gateway.storage / "ota-cache"

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
        issues = cross_check(self)
        if issues:
            raise _fail(issues)
        return self
