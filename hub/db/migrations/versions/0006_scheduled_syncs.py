"""connections.sync_interval_minutes and next_sync_at: a connection's catalog re-read on a schedule (platforms
without webhooks, or a safety net for those with them)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.add_column(sa.Column("sync_interval_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_connections_next_sync_at", ["next_sync_at"])


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_index("ix_connections_next_sync_at")
        batch_op.drop_column("next_sync_at")
        batch_op.drop_column("sync_interval_minutes")
