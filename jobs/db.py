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


def _private_file(path: Path) -> None:
    """Create a SQLite database file owner-only (0600) before SQLite does (it would use
    0644); its -wal and -shm files take the database file's mode."""
    import contextlib
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


@cache
def engine(url: str) -> Engine:
    """One pooled engine per URL per process. SQLite gets WAL and a busy timeout so that
    a writer and several readers (Airflow tasks, the CLI) can share the file."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            _private_file(Path(u.database))
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


def current_engine(name: str, url: str, variable: str) -> Engine:
    """The engine of database ``name`` at ``url`` for a reader: never creates a file nor
    migrates. :class:`DatabaseMissing` when there is no database or its schema is not this
    bevis' (older or empty), :class:`DatabaseUnavailable` when it cannot be reached — each
    one line naming the URL (password masked), the setting (``variable``) and what to do."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import DBAPIError

    from jobs.errors import DatabaseMissing

    where = safe_url(url)
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise DatabaseMissing(
            f"no {name} database at {where}: set {variable}, or create it with 'bevis db migrate'"
        )
    heads = set(ScriptDirectory.from_config(alembic_config(name, url)).get_heads())
    eng = engine(url)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"version_table": f"alembic_version_{name}"}
            )
            current = set(ctx.get_current_heads())
    except DBAPIError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the {name} database at {where} ({type(exc.orig).__name__}): "
            f"check {variable} and that the server is up"
        ) from None
    if current != heads:
        state = "has no bevis schema" if not current else "has an older schema"
        raise DatabaseMissing(
            f"the {name} database at {where} {state}: run 'bevis db migrate' (or set {variable})"
        )
    return eng


def migrate_all(settings=None) -> None:
    """Migrate sources, ledger and reporting databases named by the settings."""
    from jobs.settings import get_settings

    s = settings or get_settings()
    migrate("sources", s.resolved_source_url())
    migrate("ledger", s.resolved_ledger_url())
    migrate("reporting", s.resolved_reporting_url())
