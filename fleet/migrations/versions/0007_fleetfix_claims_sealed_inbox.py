"""command claims across replicas, webhook secrets sealed at rest, per-user notifications

- ``device_commands.claimed_by`` / ``claimed_until``: the lease a publisher holds on a pending
  command (fleet.control.service.claim).
- ``webhook_subscriptions.secret`` (plain text) becomes ``secret_sealed`` (fleet.notify.sealed);
  existing rows are sealed here, which needs the fleet's secret key: ``edgefleet fleet migrate
  CONFIG`` passes it (``fleet.core.migrate.upgrade(url, secret_key=...)``).
- ``user_notifications``: escalations addressed to the members of the target role.

Revision ID: 0007_fleetfix
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from fleet.notify.sealed import SecretBox

revision: str = "0007_fleetfix"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_subs = sa.table("webhook_subscriptions", sa.column("id", sa.Integer()),
                 sa.column("secret", sa.String()), sa.column("secret_sealed", sa.Text()))


def _box() -> SecretBox:

    key = context.config.attributes.get("secret_key")
    if not key:
        raise RuntimeError(
            "webhook secrets must be sealed (or unsealed) with the fleet's secret key: run "
            "`edgefleet fleet migrate CONFIG` (not bare alembic) so the key is known")
    return SecretBox(key)


def upgrade() -> None:
    with op.batch_alter_table("device_commands") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=100), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("webhook_subscriptions") as batch:
        batch.add_column(sa.Column("secret_sealed", sa.Text(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_subs.c.id, _subs.c.secret)).all()
    if rows:
        box = _box()
        for sub_id, plain in rows:
            conn.execute(_subs.update().where(_subs.c.id == sub_id)
                         .values(secret_sealed=box.seal(plain)))
    with op.batch_alter_table("webhook_subscriptions") as batch:
        batch.alter_column("secret_sealed", existing_type=sa.Text(), nullable=False)
        batch.drop_column("secret")

    op.create_table(
        "user_notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_user_notifications_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"],
                                name=op.f("fk_user_notifications_alarm_id_alarms"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_notifications")),
        sa.UniqueConstraint("user_id", "event_id",
                            name=op.f("uq_user_notifications_user_id_event_id")),
    )
    op.create_index(op.f("ix_user_notifications_user_id"), "user_notifications", ["user_id"])
    op.create_index(op.f("ix_user_notifications_event_id"), "user_notifications", ["event_id"])


def downgrade() -> None:
    op.drop_table("user_notifications")
    with op.batch_alter_table("webhook_subscriptions") as batch:
        batch.add_column(sa.Column("secret", sa.String(length=200), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.select(_subs.c.id, _subs.c.secret_sealed)).all()
    if rows:
        box = _box()
        for sub_id, sealed in rows:
            conn.execute(_subs.update().where(_subs.c.id == sub_id)
                         .values(secret=box.open(sealed)))
    with op.batch_alter_table("webhook_subscriptions") as batch:
        batch.alter_column("secret", existing_type=sa.String(length=200), nullable=False)
        batch.drop_column("secret_sealed")
    with op.batch_alter_table("device_commands") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
