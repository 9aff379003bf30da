"""Fixtures of the sources tests: the sources database on SQLite and on real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def source_url(request: pytest.FixtureRequest, bevis_env: Path) -> str:
    """A migrated, empty sources database (SQLite file in the test's data folder, or a
    brand-new database on the PostgreSQL server)."""
    from jobs.db import migrate

    url = (
        f"sqlite:///{bevis_env / 'nvr.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    migrate("sources", url)
    return url
