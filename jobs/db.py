"""Database engines and Alembic migrations for the three databases bevis talks to.

* ``sources``  — the NVR, the order e-service and the population register (seeded locally).
* ``ledger``   — the issuance ledger: runs, batches, certificates, deliveries, quarantine.
* ``reporting``— aggregated tables for analysts (by default inside the ledger database).

Each database has its own Alembic script folder under ``jobs/migrations/<name>`` and its own
version table, so the schemas can live in one database or in three.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from jobs.errors import DatabaseUnavailable as DatabaseUnavailable  # raised here; named by callers

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASES = ("sources", "ledger", "reporting")


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return make_url(url).render_as_string(hide_password=True)


@cache
def engine(url: str) -> Engine:
    """One pooled engine per URL per process. SQLite gets WAL and a busy timeout so that
    a writer and several readers (Airflow tasks, the CLI) can share the file."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 30})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    if u.drivername in ("postgresql", "postgres"):
        url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


def alembic_config(name: str, url: str):
    """Alembic config for one of :data:`DATABASES`."""
    from alembic.config import Config

    if name not in DATABASES:
        raise ValueError(f"unknown database {name!r}; expected one of {DATABASES}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS / name))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["database_name"] = name
    return cfg


def migrate(name: str, url: str) -> None:
    """Bring database ``name`` at ``url`` to the newest schema (idempotent)."""
    from alembic import command

    cfg = alembic_config(name, url)
    try:
        with engine(url).begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "heads")
    except Exception as exc:  # OperationalError and friends: say which database failed
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            raise DatabaseUnavailable(
                f"cannot migrate the {name} database at {safe_url(url)}: {exc.orig}"
            ) from exc
        raise


def migrate_all(settings=None) -> None:
    """Migrate sources, ledger and reporting databases named by the settings."""
    from jobs.settings import get_settings

    s = settings or get_settings()
    migrate("sources", s.resolved_source_url())
    migrate("ledger", s.resolved_ledger_url())
    migrate("reporting", s.resolved_reporting_url())
