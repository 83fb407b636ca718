"""tenant safety: ids never reused, deliveries deduplicated by content, connections know how they were installed
and where their webhooks point, taxonomy names unique whatever their case, no tenant-chosen Shopify API URL

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 00:00:00

On SQLite, ``AUTOINCREMENT`` can only be declared when a table is created, so every table is rebuilt (the
SQLite "12-step" procedure, run by ``hub.db.engine.migrate`` with foreign keys off so that dropping the old table
cascades nothing). Rows keep their ids; new ones start 1,000 above the highest id present (ids deleted before the migration
above the highest are not known any more).
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TAXONOMY = ("categories", "styles", "age_groups")
ID_MARGIN = 1000
# children after parents is not needed (foreign keys are off), but keep the model's order for readability
TABLES = ("shops", "api_keys", "categories", "styles", "age_groups", "connections", "products", "images",
          "prompts", "webhook_deliveries", "jobs")
DROPPED_CONSTRAINTS = {
    **{t: f"uq_{t}_shop_id" for t in TAXONOMY},
    "webhook_deliveries": "uq_webhook_deliveries_connection_id",
}


def _dedupe_taxonomy(table: str) -> None:
    """Trim names; an empty name gets one; names equal but for case get their id appended (the first keeps it)."""
    op.execute(f"UPDATE {table} SET name = TRIM(name)")
    op.execute(f"UPDATE {table} SET name = 'Unnamed ' || CAST(id AS VARCHAR(20)) WHERE name = ''")
    op.execute(f"""
        UPDATE {table} SET name = SUBSTR(name, 1, 80) || ' (' || CAST(id AS VARCHAR(20)) || ')'
        WHERE EXISTS (SELECT 1 FROM {table} AS first WHERE first.shop_id = {table}.shop_id
                      AND LOWER(first.name) = LOWER({table}.name) AND first.id < {table}.id)
    """)


def _split_items(body: str) -> list[str]:
    """The top-level, comma-separated items of a CREATE TABLE body."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    return [item for item in items if item]


def _autoincrement_sql(create: str, table: str, new_name: str) -> str:
    head, _, rest = create.partition("(")
    body = rest[: rest.rstrip().rfind(")")]
    items = []
    for item in _split_items(body):
        if re.fullmatch(r"CONSTRAINT \w+ PRIMARY KEY \(id\)", item):
            continue
        dropped = DROPPED_CONSTRAINTS.get(table)
        if dropped and item.startswith(f"CONSTRAINT {dropped} UNIQUE"):
            continue
        if re.fullmatch(r"id INTEGER NOT NULL", item):
            item = "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT"
        items.append(item)
    return f"CREATE TABLE {new_name} (\n\t" + ", \n\t".join(items) + "\n)"


def _rebuild_with_autoincrement(table: str) -> None:
    bind = op.get_bind()
    create = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).scalar()
    if create is None or "AUTOINCREMENT" in create.upper():
        return
    indexes = [row[0] for row in bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,))]
    columns = [row[1] for row in bind.exec_driver_sql(f'PRAGMA table_info("{table}")')]
    listed = ", ".join(f'"{c}"' for c in columns)
    new_name = f"_new_{table}"
    bind.exec_driver_sql(_autoincrement_sql(create, table, new_name))
    bind.exec_driver_sql(f'INSERT INTO {new_name} ({listed}) SELECT {listed} FROM "{table}"')
    bind.exec_driver_sql(f'DROP TABLE "{table}"')
    bind.exec_driver_sql(f'ALTER TABLE {new_name} RENAME TO "{table}"')
    for sql in indexes:
        bind.exec_driver_sql(sql)
    # the copy left the sequence at the highest id present; ids deleted above it before now are unknown, so
    # the sequence starts a margin higher
    bind.exec_driver_sql("UPDATE sqlite_sequence SET seq = seq + ? WHERE name = ?", (ID_MARGIN, table))


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("migration 0005 rebuilds SQLite tables: run it through `hub migrate` (foreign keys off)")

    for table in TAXONOMY:
        _dedupe_taxonomy(table)

    op.add_column("connections", sa.Column("via_app", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("connections", sa.Column("webhook_url", sa.String(length=2000), nullable=True))
    # the Admin API address of a Shopify store is https://{shop_domain}: no tenant-chosen URL survives
    if sqlite:
        op.execute("UPDATE connections SET settings = json_remove(settings, '$.api_url') WHERE connector = 'shopify'")
    else:
        op.execute("UPDATE connections SET settings = (settings::jsonb - 'api_url')::json WHERE connector = 'shopify'")

    op.add_column("webhook_deliveries", sa.Column("content_key", sa.String(length=64), nullable=True))
    op.add_column("webhook_deliveries", sa.Column("app_wide", sa.Boolean(), nullable=False,
                                                  server_default=sa.false()))

    if sqlite:
        for table in TABLES:
            _rebuild_with_autoincrement(table)
    else:
        for table in TAXONOMY:
            op.drop_constraint(DROPPED_CONSTRAINTS[table], table, type_="unique")
        op.drop_constraint(DROPPED_CONSTRAINTS["webhook_deliveries"], "webhook_deliveries", type_="unique")

    for table in TAXONOMY:
        op.create_index(f"uq_{table}_shop_id_name", table, ["shop_id", sa.text("lower(name)")], unique=True)
    op.create_index("uq_webhook_deliveries_connection_id_content_key", "webhook_deliveries",
                    ["connection_id", "content_key"], unique=True)
    if not sqlite:  # (on SQLite an alter would rebuild the table once more, through reflection: keep the default)
        op.alter_column("connections", "via_app", server_default=None)
        op.alter_column("webhook_deliveries", "app_wide", server_default=None)


def downgrade() -> None:
    raise NotImplementedError("0005 rebuilds tables; restore a backup to go back")
