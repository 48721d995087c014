"""OTA: releases (with their bundles), campaigns and per-device campaign status

Revision ID: ota_0001
Revises: 0007_fleetfix
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ota_0001"
down_revision: str | Sequence[str] | None = "0007_fleetfix"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("min_version", sa.String(length=20), nullable=False),
        sa.Column("device_class", sa.String(length=20), nullable=False),
        sa.Column("board", sa.String(length=50), nullable=False),
        sa.Column("keyid", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=True),
        sa.Column("uploaded_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["uploaded_by"], ["users.id"],
                                name=op.f("fk_releases_uploaded_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint("device_class", "board", "version",
                            name=op.f("uq_releases_device_class_board_version")),
    )
    op.create_index(op.f("ix_releases_device_class"), "releases", ["device_class"])
    op.create_table(
        "release_bundles",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], ondelete="CASCADE",
                                name=op.f("fk_release_bundles_release_id_releases")),
        sa.PrimaryKeyConstraint("release_id", name=op.f("pk_release_bundles")),
    )
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("wave_count", sa.Integer(), nullable=False),
        sa.Column("current_wave", sa.Integer(), nullable=False),
        sa.Column("failure_threshold", sa.Float(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("area_path", sa.String(length=1000), nullable=True),
        sa.Column("device_class", sa.String(length=20), nullable=False),
        sa.Column("halt_reason", sa.Text(), nullable=False),
        sa.Column("token_nonce", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_expires_at", TS, nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], ondelete="RESTRICT",
                                name=op.f("fk_campaigns_release_id_releases")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"],
                                name=op.f("fk_campaigns_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_campaigns_token_hash")),
    )
    op.create_index(op.f("ix_campaigns_release_id"), "campaigns", ["release_id"])
    op.create_index(op.f("ix_campaigns_state"), "campaigns", ["state"])
    op.create_table(
        "campaign_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=15), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("from_version", sa.String(length=50), nullable=True),
        sa.Column("command_id", sa.String(length=64), nullable=True),
        sa.Column("event_epoch", sa.String(length=64), nullable=True),
        sa.Column("event_seq", sa.Integer(), nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE",
                                name=op.f("fk_campaign_devices_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE",
                                name=op.f("fk_campaign_devices_device_id_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_devices")),
        sa.UniqueConstraint("campaign_id", "device_id",
                            name=op.f("uq_campaign_devices_campaign_id_device_id")),
    )
    op.create_index(op.f("ix_campaign_devices_campaign_id"), "campaign_devices",
                    ["campaign_id"])
    op.create_index(op.f("ix_campaign_devices_device_id"), "campaign_devices", ["device_id"])
    op.create_index(op.f("ix_campaign_devices_state"), "campaign_devices", ["state"])


def downgrade() -> None:
    op.drop_table("campaign_devices")
    op.drop_table("campaigns")
    op.drop_table("release_bundles")
    op.drop_table("releases")
