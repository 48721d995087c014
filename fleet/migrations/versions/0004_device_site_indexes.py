"""devices: composite (site, class) and (site, connectivity) indexes for area-scoped lists

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_devices_site_class", "devices", ["site_id", "device_class"])
    op.create_index("ix_devices_site_connectivity", "devices", ["site_id", "connectivity"])


def downgrade() -> None:
    op.drop_index("ix_devices_site_connectivity", table_name="devices")
    op.drop_index("ix_devices_site_class", table_name="devices")
