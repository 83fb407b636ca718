"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from hub.db.engine import create_engine, head_revision
from hub.db.models import Base, dialect_only


def _diff(connection) -> list:
    context = MigrationContext.configure(connection, opts={
        "compare_type": True,
        "include_object": lambda obj, name, kind, reflected, other: not dialect_only(kind, name)})
    return compare_metadata(context, Base.metadata)


@pytest.mark.filterwarnings("ignore:.*expression-based index")
def test_migrated_schema_matches_models(database_url):
    async def check():
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_diff)
        finally:
            await engine.dispose()

    assert asyncio.run(check()) == []
    assert head_revision() == "0014"


def test_0005_keeps_the_data_and_makes_it_safe(tmp_path, request):
    """From 0004 with data in it: taxonomy names trimmed and made unique ignoring case, tenant-chosen Shopify API
    URLs gone, ids never reused afterwards (SQLite tables rebuilt without cascading a single row away)."""
    from alembic import command
    from sqlalchemy import text

    from hub.db.engine import _alembic_config, migrate

    async def upgrade_to(url: str, revision: str) -> None:
        engine = create_engine(url)

        def run(connection):
            cfg = _alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

        try:
            async with engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await conn.run_sync(run)
                await conn.commit()
        finally:
            await engine.dispose()

    async def sql(url: str, *statements: str) -> list:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                result = None
                for statement in statements:
                    result = await conn.execute(text(statement))
                return list(result.all()) if result is not None and result.returns_rows else []
        finally:
            await engine.dispose()

    for backend in ("sqlite", "postgres"):
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        else:
            from tests.conftest import _pg_exec, _with_db

            pg = request.getfixturevalue("pg_service")
            name = f"hub_mig_{tmp_path.name[-8:].lower().replace('-', '_')}"
            asyncio.run(_pg_exec(pg.url, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"'))
            url = _with_db(pg.url, name)
        asyncio.run(upgrade_to(url, "0004"))
        now = "'2026-01-01 00:00:00+00'"
        asyncio.run(sql(
            url,
            f"INSERT INTO shops (id, name, email, active, created_at) VALUES (1, 'a', 'a@x', true, {now})",
            f"INSERT INTO categories (shop_id, id, name, description, created_at) VALUES (1, 1, 'Dresses', '', {now}),"
            f" (1, 2, 'dresses ', '', {now}), (1, 3, '   ', '', {now})",
            "INSERT INTO connections (id, shop_id, connector, name, settings, webhook_state, status, info, created_at,"
            " updated_at) VALUES (5, 1, 'shopify', 's', '{\"shop_domain\": \"x.myshopify.com\", \"api_url\": "
            f"\"http://evil.example\"}}', '{{}}', 'active', '{{}}', {now}, {now})",
            f"INSERT INTO images (id, shop_id, name, description, source, status, attempts, processor_embedded,"
            f" created_at, updated_at, connection_id) VALUES (9, 1, '', '', 'shopify', 'ready', 0, true, {now}, {now}, 5)",
        ))
        asyncio.run(migrate(url))
        names = asyncio.run(sql(url, "SELECT id, name FROM categories ORDER BY id"))
        assert names == [(1, "Dresses"), (2, "dresses (2)"), (3, "Unnamed 3")], backend
        settings = asyncio.run(sql(url, "SELECT settings FROM connections"))[0][0]
        assert "api_url" not in (settings if isinstance(settings, dict) else json.loads(settings)), backend
        assert asyncio.run(sql(url, "SELECT id FROM images")) == [(9,)], backend  # nothing cascaded away
        asyncio.run(sql(url, "DELETE FROM images WHERE id = 9",
                        f"INSERT INTO images (shop_id, name, description, source, status, attempts, processor_embedded,"
                        f" created_at, updated_at) VALUES (1, '', '', 'manual', 'pending', 0, false, {now}, {now})"))
        if backend == "sqlite":  # (PostgreSQL's sequences never go back; the rows above set ids by hand)
            assert asyncio.run(sql(url, "SELECT id FROM images"))[0][0] > 9
        if backend == "postgres":
            asyncio.run(_pg_exec(pg.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
