"""The gateway's configuration: one TOML file, validated at start-up.

A small package, one concern a module: :mod:`~gateway.config.schema` (the pydantic models),
:mod:`~gateway.config.checks` (cross-checks against the register maps and within the file),
:mod:`~gateway.config.locator` (field path → TOML line), :mod:`~gateway.config.load` (reading
and validating, errors as :class:`ConfigError`, from :mod:`~gateway.config.errors`). The CLI
(``edgefleet gateway check CONFIG``) prints; nothing here does.
"""

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.load import load_config, missing_files, validate_config
from gateway.config.locator import TomlLocator
from gateway.config.schema import (
    DEFAULT_PASSWORDS,
    BusConfig,
    DeviceConfig,
    GatewayConfig,
    GatewaySection,
    MqttConfig,
    OtaSection,
    PollOverrides,
    PollPlan,
    RtuBusConfig,
    RuleAction,
    RuleCondition,
    RuleConfig,
    SerialInputConfig,
    TcpBusConfig,
)

__all__ = [
    "DEFAULT_PASSWORDS",
    "BusConfig",
    "ConfigError",
    "ConfigIssue",
    "DeviceConfig",
    "GatewayConfig",
    "GatewaySection",
    "MqttConfig",
    "OtaSection",
    "PollOverrides",
    "PollPlan",
    "RtuBusConfig",
    "RuleAction",
    "RuleCondition",
    "RuleConfig",
    "SerialInputConfig",
    "TcpBusConfig",
    "TomlLocator",
    "load_config",
    "missing_files",
    "validate_config",
]
