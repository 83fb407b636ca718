"""The lexical index (search_docs with a generated tsvector and GIN index on PostgreSQL, an FTS5 table kept by
triggers on SQLite) and each shop's default ranking mode and lexical weight

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 00:00:00

Existing images get their search documents from the sweep (``hub.domain.lexical.backfill``): building them
needs the text analyser, which a migration does not import.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# SQLite: each word is indexed with its shop in front (``s12xred``: the shop's id is digits, so the first "x"
# ends it), so a look-up reads that shop's postings of that word only, never another shop's
_PREFIXED = "replace(' ' || new.{col}, ' ', ' s' || new.shop_id || 'x')"
_INSERT = (f"INSERT INTO search_fts(rowid, title, body) VALUES "
           f"(new.image_id, {_PREFIXED.format(col='title')}, {_PREFIXED.format(col='body')});")
FTS_TRIGGERS = {
    "search_docs_ai": f"AFTER INSERT ON search_docs BEGIN {_INSERT} END",
    "search_docs_ad": "AFTER DELETE ON search_docs BEGIN DELETE FROM search_fts WHERE rowid = old.image_id; END",
    "search_docs_au": f"AFTER UPDATE ON search_docs BEGIN DELETE FROM search_fts WHERE rowid = old.image_id; "
                      f"{_INSERT} END",
}


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch_op:
        batch_op.add_column(sa.Column("search_mode", sa.String(length=10), server_default="hybrid", nullable=False))
        batch_op.add_column(sa.Column("lexical_weight", sa.Float(), server_default="0.5", nullable=False))
    op.create_table(
        "search_docs",
        sa.Column("image_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_search_docs_image_id_images",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["shop_id"], ["shops.id"], name="fk_search_docs_shop_id_shops", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", name="pk_search_docs"),
    )
    op.create_index("ix_search_docs_shop_id", "search_docs", ["shop_id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_docs ADD COLUMN terms tsvector GENERATED ALWAYS AS "
                   "(setweight(to_tsvector('simple', title), 'A') || setweight(to_tsvector('simple', body), 'D')) "
                   "STORED")
        op.execute("CREATE INDEX ix_search_docs_terms ON search_docs USING gin (terms)")
    else:
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(title, body, "
                   "tokenize = 'unicode61 remove_diacritics 0')")
        for name, body in FTS_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name in FTS_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table("search_docs")
    with op.batch_alter_table("shops") as batch_op:
        batch_op.drop_column("lexical_weight")
        batch_op.drop_column("search_mode")
