"""What the ``edgefleet fleet`` subcommands run: settings for the command line, migrate,
create-admin and serve. The CLI (edgefleet/cli.py) only parses arguments and calls these.

With no config file and no ``EDGEFLEET_FLEET_SECRET_KEY``, the secret key is generated once per
installation and kept in ``<data>/secret_key`` (mode 0600): never a shared default, and the
embedded set-up (``edgefleet fleet serve`` with nothing else) still starts.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

from fleet.core.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "cli_settings", "create_admin", "migrate", "serve"]

log = logging.getLogger(__name__)
SECRET_FILE = "secret_key"


def _installation_secret(data_dir: Path) -> str:
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    log.warning("generated this installation's secret key in %s (keep it; tokens depend on it)",
                path)
    return secret


def cli_settings(config: str | None, data: str | None = None) -> Settings:
    """Settings from an optional TOML file, the environment and ``--data``."""
    overrides: dict[str, Any] = {}
    if data:
        overrides["data_dir"] = Path(data)
    path = Path(config) if config else None
    try:
        return load_settings(path, **overrides)
    except ConfigError as exc:
        if "secret_key" not in str(exc) or path is not None \
                or os.environ.get("EDGEFLEET_FLEET_SECRET_KEY"):
            raise
    # Embedded defaults: a per-installation secret kept beside the data.
    data_dir = Path(data) if data else Settings.model_fields["data_dir"].default
    overrides["secret_key"] = _installation_secret(data_dir)
    return load_settings(None, **overrides)


def migrate(settings: Settings) -> None:
    from fleet.core.migrate import upgrade

    upgrade(settings.database_url, secret_key=settings.secret_key.get_secret_value())


def _embedded(settings: Settings) -> bool:
    return settings.database_url.startswith("sqlite")


def ensure_schema(settings: Settings) -> None:
    """The embedded SQLite database is migrated on start; a shared PostgreSQL is migrated by
    the operator (``edgefleet fleet migrate``) so replicas never race to migrate it."""
    from fleet.core.migrate import is_current, upgrade

    if _embedded(settings):
        upgrade(settings.database_url, secret_key=settings.secret_key.get_secret_value())
    elif not is_current(settings.database_url):
        raise ConfigError(f"the database at {settings.database_url.split('@')[-1]} is not at "
                          "the current schema: run `edgefleet fleet migrate` first")


def create_admin(settings: Settings, username: str = "admin") -> str:
    """Make an admin account and return its one-time password."""
    from fleet.auth.service import create_admin as make
    from fleet.core.db import Database

    ensure_schema(settings)
    db = Database.from_url(settings.database_url)
    try:
        with db.transaction() as session:
            return make(session, settings, username)
    finally:
        db.dispose()


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from fleet.app import create_app
    from fleet.core.db import Database, optimize

    ensure_schema(settings)
    db = Database.from_url(settings.database_url)
    optimize(db)  # fresh planner statistics (a bulk CSV import may have changed everything)
    app = create_app(settings, database=db)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=3)
    finally:
        db.dispose()
