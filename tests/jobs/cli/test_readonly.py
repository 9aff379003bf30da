"""Read-only commands never create nor migrate a database (issue 14, item 8): a missing,
empty or unreachable ledger is one line naming the URL (password masked) and what to do,
exit 2. And every command taking a run or batch id checks it against the id pattern: a
path-like id is a usage error, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from jobs.cli import app

runner = CliRunner()

READ_ONLY = [
    ["runs", "list"],
    ["runs", "show", "20261122T141500-a1b2"],
    ["batches", "list"],
    ["certificates", "show", "URN:UVCI:01:SE:EHM/X#Q"],
]


def _one_line(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("argv", [*READ_ONLY, ["report", "--out", "report-out"]])
def test_a_missing_sqlite_ledger_is_one_line_and_stays_missing(
    bevis_env: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: `runs list` created and migrated data/ledger.db and showed an empty table."""
    monkeypatch.chdir(bevis_env)
    result = runner.invoke(app, argv)
    _one_line(result, f"sqlite:///{bevis_env / 'ledger.db'}", "bevis db migrate")
    assert sorted(p.name for p in bevis_env.iterdir()) == []  # nothing created


@pytest.mark.parametrize("argv", [*READ_ONLY, ["report", "--out", "report-out"]])
def test_an_unreachable_ledger_is_one_line_with_the_password_masked(
    bevis_env: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a traceback of several hundred lines (OperationalError from psycopg)."""
    url = "postgresql+psycopg://bevis:s3cret-pw@127.0.0.1:1/ledger"
    monkeypatch.setenv("BEVIS_LEDGER_URL", url)
    monkeypatch.chdir(bevis_env)
    line = _one_line(runner.invoke(app, argv), "127.0.0.1:1/ledger", "BEVIS_LEDGER_URL")
    assert "s3cret-pw" not in line and "***" in line


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_empty_database_is_neither_migrated_nor_filled(
    bevis_env: Path, dialect: str, request: pytest.FixtureRequest, monkeypatch
) -> None:
    if dialect == "sqlite":
        url = f"sqlite:///{bevis_env / 'empty.db'}"
        create_engine(url).connect().close()  # an empty file
    else:
        url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("BEVIS_LEDGER_URL", url)
    for argv in READ_ONLY:
        _one_line(runner.invoke(app, argv), "has no bevis schema", "bevis db migrate")
    eng = create_engine(url)
    assert inspect(eng).get_table_names() == []
    eng.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_migrated_ledger_is_read(
    bevis_env: Path, dialect: str, request: pytest.FixtureRequest, monkeypatch
) -> None:
    if dialect == "postgresql":
        monkeypatch.setenv("BEVIS_LEDGER_URL", request.getfixturevalue("pg_url"))
    assert runner.invoke(app, ["db", "migrate"]).exit_code == 0
    for argv in (["runs", "list", "--json"], ["batches", "list", "--json"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0 and result.stdout.strip() == "[]", result.output
    missing = runner.invoke(app, ["runs", "show", "nope"])
    assert missing.exit_code == 2 and "not in the ledger" in missing.stderr


BAD_RUN, BAD_BATCH = "../../etc", "../../etc-b0001"
ID_COMMANDS = [
    ["extract", "--run", BAD_RUN],
    ["orders", "release", "--run", BAD_RUN],
    ["orders", "status", "--run", BAD_RUN],
    ["validate", "--run", BAD_RUN, "--suite", "nvr_extract"],
    ["validate", "--run", "r1", "--suite", "signed_batch", "--batch", BAD_BATCH],
    ["map", "--run", BAD_RUN],
    ["issue", "--run", BAD_RUN],
    ["runs", "show", BAD_RUN],
    ["batches", "list", "--run", BAD_RUN],
    ["batches", "plan", BAD_RUN],
    ["batches", "step", BAD_BATCH, "sign"],
    ["batches", "rerun", BAD_BATCH],
    ["batches", "rerun", "--failed", "--run", BAD_RUN],
    ["deliver", BAD_BATCH],
    ["deliver", "x" * 70 + "-b0001"],
    ["extract", "--run", "a/b"],
    ["extract", "--run", ".hidden"],
]


@pytest.mark.parametrize("argv", ID_COMMANDS, ids=lambda a: " ".join(a)[:40])
def test_path_like_ids_are_usage_errors(bevis_env: Path, argv: list[str]) -> None:
    """Before: `deliver ../../etc-b0001` ended in a traceback (ValueError from RunPaths)."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "invalid run id" in result.output or "invalid batch id" in result.output
    assert not (bevis_env / "ledger.db").exists() and not (bevis_env / "nvr.db").exists()
