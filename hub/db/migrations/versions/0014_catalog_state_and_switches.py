"""connections.catalog_state and sync_error: what a connection's last complete catalog read left for the next
one (a feed's ETag and Last-Modified), and why its last read failed (the catalog is kept as it was);
vector_models.switched_at: when ``hub reindex --switch`` made a model active (None: a process registered it)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch_op:
        batch_op.add_column(sa.Column("catalog_state", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("sync_error", sa.Text(), nullable=True))
    with op.batch_alter_table("vector_models") as batch_op:
        batch_op.add_column(sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vector_models") as batch_op:
        batch_op.drop_column("switched_at")
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_column("sync_error")
        batch_op.drop_column("catalog_state")
