"""The Alembic environment every bevis database shares (see jobs/db.py): each database
keeps its own version table, so the three schemas can live in one database or apart."""

from __future__ import annotations


def run(database: str) -> None:
    """Run the migrations of ``database`` on the connection jobs.db.migrate passes (or on a
    fresh engine for the URL in the config when Alembic is run by hand)."""
    from alembic import context

    from jobs.db import engine

    config = context.config

    def _run(connection) -> None:
        context.configure(
            connection=connection,
            version_table=f"alembic_version_{database}",
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = config.attributes.get("connection")
    if connection is None:
        with engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
            _run(conn)
    else:
        _run(connection)
