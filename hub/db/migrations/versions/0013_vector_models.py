"""vector_models: models ``hub reindex`` builds collections for beside the active one

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_models",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_vector_models"),
    )


def downgrade() -> None:
    op.drop_table("vector_models")
