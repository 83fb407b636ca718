"""The database: engine and sessions (``engine``), the tables (``models``), and the Alembic migrations that
create them (``migrations/``, shipped inside the package so a plain ``pip install`` can ``hub migrate``)."""
