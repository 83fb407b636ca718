"""merch_rules: each shop's pins, hides, synonyms and boosts

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merch_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("query", sa.String(length=1000), nullable=True),
        sa.Column("query_key", sa.String(length=1000), nullable=True),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("condition", sa.String(length=20), nullable=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name="fk_merch_rules_shop_id_shops", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], name="fk_merch_rules_product_id_products",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_merch_rules_image_id_images",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_merch_rules"),
    )
    op.create_index("ix_merch_rules_shop_id", "merch_rules", ["shop_id"])


def downgrade() -> None:
    op.drop_table("merch_rules")
