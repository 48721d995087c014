"""OTA: the timestamp of the last OtaEvent applied to a campaign member, to order events across
gateway epochs (within one epoch, seq orders them)

Revision ID: ota_0002
Revises: ota_0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ota_0002"
down_revision: str | Sequence[str] | None = "ota_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_devices") as batch:
        batch.add_column(sa.Column("event_ts", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_devices") as batch:
        batch.drop_column("event_ts")
