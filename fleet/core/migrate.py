"""Schema migrations with Alembic, driven from code (no alembic.ini to find).

``upgrade(url)`` brings a database to every head (domains may keep their own revision branch);
``pending_changes(url)`` compares the migrated schema with the models, so a test fails when a
model changed without a migration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from fleet.core.db import connect

__all__ = ["alembic_config", "downgrade", "pending_changes", "upgrade"]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str, secret_key: str | None = None) -> Config:
    """The Alembic configuration; ``secret_key`` reaches revisions that seal data (0007 seals
    webhook secrets) through ``config.attributes``, never through a file or the log."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if secret_key:
        cfg.attributes["secret_key"] = secret_key
    return cfg


def upgrade(url: str, revision: str = "heads", *, secret_key: str | None = None) -> None:
    log.info("migrating the fleet database to %s", revision)
    command.upgrade(alembic_config(url, secret_key), revision)


def downgrade(url: str, revision: str, *, secret_key: str | None = None) -> None:
    log.info("downgrading the fleet database to %s", revision)
    command.downgrade(alembic_config(url, secret_key), revision)


def pending_changes(url: str) -> list[Any]:
    """Differences between the database's schema and the models (empty when in step)."""
    import fleet.models

    engine = connect(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, fleet.models.Base.metadata))
    finally:
        engine.dispose()


def is_current(url: str) -> bool:
    """Is the database at every head of the migration scripts?"""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    engine = connect(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    return current == set(script.get_heads())
