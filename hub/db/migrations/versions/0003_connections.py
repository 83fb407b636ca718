"""connections; products and images know the connection they came from

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 23:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("connector", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column("webhook_state", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_connections_shop_id_shops"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
    )
    with op.batch_alter_table("connections") as batch_op:
        batch_op.create_index(batch_op.f("ix_connections_shop_id"), ["shop_id"], unique=False)
    for table in ("products", "images"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("connection_id", sa.Integer(), nullable=True))
            batch_op.create_foreign_key(
                op.f(f"fk_{table}_connection_id_connections"), "connections", ["connection_id"], ["id"],
                ondelete="CASCADE",
            )
            batch_op.create_index(batch_op.f(f"ix_{table}_connection_id"), ["connection_id"], unique=False)


def downgrade() -> None:
    for table in ("images", "products"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_connection_id"))
            batch_op.drop_constraint(op.f(f"fk_{table}_connection_id_connections"), type_="foreignkey")
            batch_op.drop_column("connection_id")
    with op.batch_alter_table("connections") as batch_op:
        batch_op.drop_index(batch_op.f("ix_connections_shop_id"))
    op.drop_table("connections")
