"""console_links (sign-in links mailed to a shop's address) and console sessions opened by one (no key)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name="fk_console_links_shop_id_shops", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_console_links"),
        sa.UniqueConstraint("token_hash", name="uq_console_links_token_hash"),
    )
    op.create_index("ix_console_links_shop_id", "console_links", ["shop_id"])
    with op.batch_alter_table("console_sessions") as batch_op:
        batch_op.alter_column("key_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM console_sessions WHERE key_id IS NULL")
    with op.batch_alter_table("console_sessions") as batch_op:
        batch_op.alter_column("key_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("console_links")
