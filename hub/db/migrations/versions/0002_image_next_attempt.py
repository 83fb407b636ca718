"""images.next_attempt_at: when the sweep re-queues a pending or stuck image

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index("ix_images_status")
        batch_op.create_index("ix_images_status_next_attempt_at", ["status", "next_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("images") as batch_op:
        batch_op.drop_index("ix_images_status_next_attempt_at")
        batch_op.create_index("ix_images_status", ["status"])
        batch_op.drop_column("next_attempt_at")
