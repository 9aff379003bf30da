"""Alembic environment for the ledger database (see jobs/db.py)."""

from alembic import context

from jobs.db import engine

config = context.config
VERSION_TABLE = "alembic_version_ledger"


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        with engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
