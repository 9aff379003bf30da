"""The Alembic revisions are explicit operations, and they build exactly the schema the
models describe, on SQLite and on PostgreSQL; downgrade to nothing and upgrade again."""

from __future__ import annotations

from pathlib import Path

import pytest


def _differences(url: str) -> dict[str, list]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from jobs.db import engine
    from jobs.ledger.models import LedgerBase
    from jobs.reporting.tables import ReportingBase
    from jobs.sources.models import SourcesBase

    out = {}
    bases = (("sources", SourcesBase), ("ledger", LedgerBase), ("reporting", ReportingBase))
    with engine(url).connect() as conn:
        for name, base in bases:
            ours = set(base.metadata.tables)

            def include(obj, obj_name, type_, reflected, compare_to, ours=ours) -> bool:
                # the three schemas may share one database: the others' objects are not ours
                table = obj_name if type_ == "table" else getattr(obj.table, "name", None)
                return table in ours

            ctx = MigrationContext.configure(conn, opts={"include_object": include})
            out[name] = compare_metadata(ctx, base.metadata)
    return out


def _tables(url: str) -> set[str]:
    import sqlalchemy as sa

    from jobs.db import engine

    with engine(url).connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def _migrate_down_and_up(url: str) -> None:
    from alembic import command

    from jobs.db import alembic_config, engine, migrate

    for name in ("sources", "ledger", "reporting"):
        migrate(name, url)
    for name in ("reporting", "ledger", "sources"):
        cfg = alembic_config(name, url)
        with engine(url).begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
    assert _tables(url) <= {
        "alembic_version_sources",
        "alembic_version_ledger",
        "alembic_version_reporting",
    }
    for name in ("sources", "ledger", "reporting"):
        migrate(name, url)


def test_revisions_are_explicit_operations() -> None:
    import jobs.db

    for path in Path(jobs.db.__file__).parent.joinpath("migrations").glob("*/versions/*.py"):
        text = path.read_text("utf-8")
        assert "create_all" not in text and "drop_all" not in text, path.name
        assert "Base" not in text, f"{path.name} imports a model base"


def test_migrated_sqlite_schema_is_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'all.db'}"
    _migrate_down_and_up(url)
    assert _differences(url) == {"sources": [], "ledger": [], "reporting": []}


@pytest.mark.postgres
def test_migrated_postgres_schema_is_the_models(pg_url: str) -> None:
    _migrate_down_and_up(pg_url)
    assert _differences(pg_url) == {"sources": [], "ledger": [], "reporting": []}
