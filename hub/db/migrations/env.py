"""Alembic environment: runs on the connection handed in by ``hub.db.engine.migrate`` (or its own)."""

from alembic import context
from sqlalchemy import create_engine

from hub.db.models import Base, dialect_only

config = context.config
target_metadata = Base.metadata


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=lambda obj, name, kind, reflected, other: not dialect_only(kind, name),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # plain `alembic` CLI use: a sync URL
    url = config.get_main_option("sqlalchemy.url").replace("+asyncpg", "+psycopg").replace("+aiosqlite", "")
    with create_engine(url).connect() as conn:
        run(conn)
        conn.commit()
