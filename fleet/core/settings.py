"""The fleet's one settings object, from the environment and an optional TOML file.

Precedence: keyword arguments, then ``EDGEFLEET_FLEET_*`` environment variables, then the TOML
file, then defaults. Validation happens once, at start-up, and names the field (and the file)
that is wrong. The secret key signs and peppers tokens: a missing, empty, short or well-known
value is refused rather than silently used, so no two installations share a secret by accident.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fleet.ingest.settings import IngestSettings
from fleet.ota.settings import OtaSettings
from fleet.telemetry.settings import TelemetrySettings

__all__ = ["ConfigError", "EscalationStep", "Settings", "load_settings"]

#: Values people paste from examples; refusing them is the point.
_KNOWN_BAD_SECRETS = frozenset({
    "changeme", "change-me", "changethis", "secret", "password", "default", "admin",
    "edgefleet", "please-change-me", "your-secret-key",
})
MIN_SECRET_LENGTH = 32


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file and the field."""


class EscalationStep(BaseModel):
    """Escalate to ``role`` when an alarm is still unacknowledged ``after_s`` after raising."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    after_s: float = Field(gt=0)
    role: str


def _default_escalation() -> dict[str, list[EscalationStep]]:
    # Fire: minutes, not hours. Keys are device classes; "default" covers every other class.
    return {
        "fire": [EscalationStep(after_s=120, role="fire-safety"),
                 EscalationStep(after_s=300, role="admin")],
        "default": [EscalationStep(after_s=1800, role="technician"),
                    EscalationStep(after_s=7200, role="admin")],
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_FLEET_", env_nested_delimiter="__",
                                      extra="forbid")

    #: Where the embedded database (and, later, the embedded telemetry store) live.
    data_dir: Path = Path("fleet-data")
    #: SQLAlchemy URL; empty means ``sqlite:///<data_dir>/fleet.db``. PostgreSQL:
    #: ``postgresql+psycopg://user:pass@host/db``.
    database_url: str = ""
    secret_key: SecretStr = SecretStr("")
    session_ttl_s: float = Field(default=12 * 3600, gt=0)
    #: Consecutive failed logins that lock an account, and for how long.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_s: float = Field(default=900, gt=0)
    #: argon2id cost (RFC 9106's second recommended profile by default).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    #: How often the escalation timer looks for overdue alarms.
    escalation_poll_s: float = Field(default=5.0, gt=0)
    escalation: dict[str, list[EscalationStep]] = Field(default_factory=_default_escalation)
    #: How often the live-push poller reads new alarm changes from the database.
    push_poll_s: float = Field(default=0.1, gt=0)
    #: How often the webhook worker looks for due deliveries.
    webhook_poll_s: float = Field(default=1.0, gt=0)
    #: Start the background timers (escalation, push poller) with the app.
    run_timers: bool = True
    #: The dashboard map's tile layer (``https://tiles.example/{z}/{x}/{y}.png`` on a server the
    #: operations centre can reach); empty: no tiles, the map draws areas and sites alone.
    dashboard_tile_url: str = ""
    dashboard_tile_attribution: str = ""

    #: MQTT ingest (empty host: this replica runs none) and the telemetry sink it writes to.
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    #: Releases and campaigns: the release trust, the bundle URL base, campaign defaults.
    ota: OtaSettings = Field(default_factory=OtaSettings)

    config_file: Path | None = Field(default=None, exclude=True)

    @field_validator("secret_key")
    @classmethod
    def _refuse_default_secrets(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.strip():
            raise ValueError("secret_key is empty: set EDGEFLEET_FLEET_SECRET_KEY or secret_key "
                             "in the config file (e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(48))')")
        if raw.strip().lower() in _KNOWN_BAD_SECRETS:
            raise ValueError("secret_key is a well-known default; generate a random one")
        if len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret_key is shorter than {MIN_SECRET_LENGTH} characters")
        return value

    @model_validator(mode="after")
    def _database_default(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'fleet.db'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get("path")
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


# The file is passed to the source through this slot (pydantic-settings builds sources per class).
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``config`` (TOML, optional), the environment and overrides.

    Raises :class:`ConfigError` naming the file and each bad field."""
    if config is not None:
        try:
            with config.open("rb") as fh:
                tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{config}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config}: {exc}") from None
    _TOML_FILE["path"] = config
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        where = str(config) if config else "environment"
        lines = [f"{where}: {'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                 for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    finally:
        _TOML_FILE["path"] = None
    settings.config_file = config
    return settings
