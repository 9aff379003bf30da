"""`bevis seed` replaces only what it made (issue 14, item 8): a database that holds other
data — rows the seeder did not write, or tables bevis does not know — is refused unless
--force; a new, empty, migrated or earlier-seeded database is seeded. SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from jobs.cli import app
from jobs.db import migrate
from jobs.devtools.seed import NotSeeded, seed

runner = CliRunner()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, bevis_env: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{bevis_env / 'sources.db'}"
    return request.getfixturevalue("pg_url")


def _count(url: str, sql: str) -> int:
    eng = create_engine(url)
    with eng.connect() as conn:
        n = conn.execute(text(sql)).scalar_one()
    eng.dispose()
    return n


def _execute(url: str, *statements: str) -> None:
    eng = create_engine(url)
    with eng.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    eng.dispose()


def test_a_register_not_made_by_the_seeder_is_refused(url: str) -> None:
    """Before: seed() truncated population, NVR events and orders of any database."""
    migrate("sources", url)
    _execute(
        url,
        "INSERT INTO population (person_id, given_name, family_name, dob, protected_identity) "
        "VALUES ('197001011234', 'Real', 'Person', '1970-01-01', false)",
    )
    with pytest.raises(NotSeeded, match=r"was not made by 'bevis seed'.*rows in population"):
        seed(20, url=url)
    assert _count(url, "SELECT count(*) FROM population") == 1  # untouched
    result = runner.invoke(app, ["seed", "--persons", "20", "--db", url])
    assert result.exit_code == 2 and "--force" in result.stderr
    assert _count(url, "SELECT count(*) FROM population") == 1
    forced = runner.invoke(app, ["seed", "--persons", "20", "--db", url, "--force"])
    assert forced.exit_code == 0, forced.output
    assert _count(url, "SELECT count(*) FROM population") == 20


def test_a_database_with_foreign_tables_is_refused(url: str) -> None:
    _execute(url, "CREATE TABLE customers (id integer)", "INSERT INTO customers VALUES (1)")
    with pytest.raises(NotSeeded, match="tables bevis does not know \\(customers\\)"):
        seed(20, url=url)
    assert _count(url, "SELECT count(*) FROM customers") == 1


def test_new_migrated_and_seeded_databases_are_seeded(url: str) -> None:
    m = seed(20, url=url)  # new (SQLite: no file yet) or empty (PostgreSQL)
    assert m.persons == 20
    assert seed(30, seed=1, url=url).persons == 30  # made by the seeder: replaced
    assert _count(url, "SELECT count(*) FROM population") == 30
    assert _count(url, "SELECT persons FROM bevis_seed") == 30
