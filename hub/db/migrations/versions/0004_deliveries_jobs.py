"""webhook deliveries and jobs; products keyed per connection, with sync marks and tombstones

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CONNECTED = sa.text("connection_id IS NOT NULL")
MANUAL = sa.text("connection_id IS NULL")
ACTIVE_JOB = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_constraint("uq_products_shop_id", type_="unique")
        batch_op.add_column(sa.Column("category_hint", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("seen_job_id", sa.Integer(), nullable=True))
    op.create_index("uq_products_connection_id_external_id", "products", ["connection_id", "external_id"],
                    unique=True, sqlite_where=CONNECTED, postgresql_where=CONNECTED)
    op.create_index("uq_products_shop_id_source_external_id", "products", ["shop_id", "source", "external_id"],
                    unique=True, sqlite_where=MANUAL, postgresql_where=MANUAL)

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=True),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f("fk_webhook_deliveries_connection_id_connections"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("connection_id", "delivery_id", name=op.f("uq_webhook_deliveries_connection_id")),
    )
    op.create_index("ix_webhook_deliveries_status_next_attempt_at", "webhook_deliveries",
                    ["status", "next_attempt_at"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name=op.f("fk_jobs_shop_id_shops"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"],
                                name=op.f("fk_jobs_connection_id_connections"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_shop_id_id", "jobs", ["shop_id", "id"])
    op.create_index("ix_jobs_status_next_attempt_at", "jobs", ["status", "next_attempt_at"])
    op.create_index("uq_jobs_active_connection_id", "jobs", ["connection_id"], unique=True,
                    sqlite_where=ACTIVE_JOB, postgresql_where=ACTIVE_JOB)


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("webhook_deliveries")
    op.drop_index("uq_products_shop_id_source_external_id", table_name="products")
    op.drop_index("uq_products_connection_id_external_id", table_name="products")
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_column("seen_job_id")
        batch_op.drop_column("category_hint")
        batch_op.create_unique_constraint("uq_products_shop_id", ["shop_id", "source", "external_id"])
