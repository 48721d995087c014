"""ingest: delivery accounting per (gateway, device, epoch) and reject counters

Revision ID: ingest_0001
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0001"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("ingest",)
depends_on: str | Sequence[str] | None = None

_COUNT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ingest_streams",
        sa.Column("gateway", sa.String(length=100), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("epoch", sa.String(length=64), nullable=False),
        sa.Column("produced", _COUNT, nullable=False),
        sa.Column("received", _COUNT, nullable=False),
        sa.Column("duplicates", _COUNT, nullable=False),
        sa.Column("declared_drops", _COUNT, nullable=False),
        sa.Column("gaps", _COUNT, nullable=False),
        sa.Column("seen", sa.Text(), nullable=False),
        sa.Column("dropped", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "device", "epoch", name=op.f("pk_ingest_streams")),
    )
    op.create_table(
        "ingest_rejects",
        sa.Column("gateway", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.Column("count", _COUNT, nullable=False),
        sa.Column("last_detail", sa.String(length=500), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("gateway", "reason", name=op.f("pk_ingest_rejects")),
    )


def downgrade() -> None:
    op.drop_table("ingest_rejects")
    op.drop_table("ingest_streams")
