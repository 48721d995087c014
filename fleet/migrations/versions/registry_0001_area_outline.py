"""registry: an area's outline (a GeoJSON Polygon or MultiPolygon), drawn on the dashboard's map

``areas.outline`` is nullable: existing areas have none and keep being outlined by the hull of
their sites. Its own branch after 0007, as ingest and OTA keep theirs.

Revision ID: registry_0001
Revises: 0007_fleetfix
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "registry_0001"
down_revision: str | Sequence[str] | None = "0007_fleetfix"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("areas") as batch:
        batch.add_column(sa.Column("outline", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("areas") as batch:
        batch.drop_column("outline")
