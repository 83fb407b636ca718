"""prompts.top_score (how well the catalog answered: the best result's similarity) and
webhook_deliveries.duplicates (how often a platform sent the same delivery again), for the console; indexes for
the prompts of a period and a connection's deliveries, newest first

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.add_column(sa.Column("top_score", sa.Float(), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.add_column(sa.Column("duplicates", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_prompts_shop_id_created_at", "prompts", ["shop_id", "created_at"])
    op.create_index("ix_webhook_deliveries_connection_id_id", "webhook_deliveries", ["connection_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_connection_id_id", "webhook_deliveries")
    op.drop_index("ix_prompts_shop_id_created_at", "prompts")
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_column("duplicates")
    with op.batch_alter_table("prompts") as batch_op:
        batch_op.drop_column("top_score")
