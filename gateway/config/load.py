"""Loading a gateway config: TOML text in, a validated :class:`GatewayConfig` or located errors.

Errors name the file, the line and the field: ``gateway.toml:14: bus[0].device[1].address: Input
should be less than or equal to 247``. Printing them is the CLI's business (edgefleet/cli.py).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.locator import Loc, TomlLocator
from gateway.config.schema import GatewayConfig

__all__ = ["load_config", "missing_files", "validate_config"]

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
    """Files the config names that are absent here (certificates, password file, release
    trust)."""
    mqtt = config.mqtt
    named = {"mqtt.cafile": mqtt.cafile, "mqtt.certfile": mqtt.certfile,
             "mqtt.keyfile": mqtt.keyfile, "mqtt.password_file": mqtt.password_file,
             "ota.trust": config.ota.trust if config.ota is not None else None}
    return [f"{field}: {path} does not exist" for field, path in named.items()
            if path is not None and not path.exists()]
