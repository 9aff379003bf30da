"""A run's state is the truth (issue 14, item 4): decided once, from what happened.

A data-quality gate or an extract error makes the run FAILED with the error text (suite and
expectation, no personal data), and nothing later turns it into SUCCEEDED; the recorded
counts are the ledger's, not stale keys of an earlier finish; ``runs show`` names the
orders a failed run still holds and the command that gives them back. On SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from jobs.cli import app
from tests.jobs.batches_support import (  # noqa: F401  (fixtures)
    batch_env_fixture,
    dev_keys_fixture,
    ledger_url_fixture,
    make_run,
)


def _cli(args: list[str]):
    try:
        return CliRunner().invoke(app, args)
    finally:
        structlog.reset_defaults()


@pytest.fixture
def register(batch_env: Path, monkeypatch: pytest.MonkeyPatch):
    """Migrated databases, development keys, and a function that seeds the register."""
    from jobs.db import migrate_all
    from jobs.devtools.seed import seed
    from jobs.settings import get_settings

    monkeypatch.setenv("BEVIS_DEV_MODE", "1")  # the development pseudonym key is fine here
    migrate_all(get_settings())

    def make(persons: int, defect_rate: float = 0.0) -> None:
        seed(persons, seed=7, defect_rate=defect_rate)

    return make


def _run_row(run_id: str):
    from sqlalchemy import select

    from jobs.ledger.models import Run
    from jobs.ledger.runs import ledger

    with ledger().connect() as conn:
        return conn.execute(select(Run).where(Run.id == run_id)).one()


def _listed(run_id: str) -> dict:
    result = _cli(["runs", "list", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = [r for r in json.loads(result.stdout) if r["run_id"] == run_id]
    return entry


@pytest.mark.slow
def test_gate_failure_is_a_failed_run(register, ledger_url: str, monkeypatch) -> None:
    """The nvr_extract suite's quarantine-rate gate stops `bevis issue`: the run is FAILED
    in the ledger (not SUCCEEDED with 0 certificates), its error names the suite and the
    expectation; `runs show` lists the orders it still holds and how to release them."""
    from jobs.flow import issue_run
    from jobs.log import IDENTITY_NUMBER

    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.0")
    register(60, defect_rate=0.1)
    summary = issue_run(batch_size=50, progress=False)
    run_id = summary["run_id"]

    listed = _listed(run_id)
    assert (listed["state"], listed["certificates"]) == ("FAILED", 0), (
        f"runs list shows {listed['state']} with {listed['certificates']} certificates "
        "after a gate failure"
    )
    row = _run_row(run_id)
    assert row.state.value == "FAILED" and row.failed_step == "validate_nvr_extract"
    assert "suite nvr_extract" in row.error and "expectation quarantine_rate" in row.error
    assert not IDENTITY_NUMBER.search(row.error)
    assert summary["state"] == "FAILED" and summary["error"] == row.error

    shown = _cli(["runs", "show", run_id, "--json"])
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.stdout)
    claimed = info["claimed_orders"]
    assert claimed["count"] >= summary["orders"] > 0  # CLAIMED, and DUPLICATE ones
    assert len(claimed["order_ids"]) == min(claimed["count"], 20)
    assert claimed["release"] == f"bevis orders release --run {run_id}"
    table = _cli(["runs", "show", run_id])
    assert f"bevis orders release --run {run_id}" in table.stdout
    assert "quarantine_rate" in table.stdout

    released = _cli(["orders", "release", "--run", run_id])
    assert released.exit_code == 0 and f"released {claimed['count']} orders" in released.stdout
    again = json.loads(_cli(["runs", "show", run_id, "--json"]).stdout)
    assert again["claimed_orders"]["count"] == 0 and again["state"] == "FAILED"


@pytest.mark.slow
def test_extract_error_is_a_failed_run(register, ledger_url: str) -> None:
    """The register lost a table: ExtractError. The run is FAILED with that text, for good."""
    from sqlalchemy import text

    from jobs.db import engine
    from jobs.flow import finish, issue_run
    from jobs.settings import get_settings

    register(20)
    with engine(get_settings().resolved_source_url()).begin() as conn:
        conn.execute(text("DROP TABLE nvr_snapshots"))
    summary = issue_run(batch_size=50, progress=False)
    run_id = summary["run_id"]
    listed = _listed(run_id)
    assert listed["state"] == "FAILED", f"runs list shows {listed['state']} after ExtractError"
    row = _run_row(run_id)
    assert row.failed_step == "extract"
    assert row.error.startswith("ExtractError: ") and "nvr_snapshots" in row.error
    finish(run_id)  # a second finish (Airflow's retry of it) changes nothing
    again = _run_row(run_id)
    assert (again.state.value, again.error) == ("FAILED", row.error)


def test_counts_are_replaced_after_a_successful_rerun(batch_env, ledger_url: str, monkeypatch):
    """A batch fails, the run is finished FAILED (batches_failed 1); the batch is rerun and
    the run closed: the counts say batches_failed 0, in the ledger and in `runs show`."""
    from jobs import batches, flow
    from jobs.db import migrate
    from jobs.settings import get_settings

    monkeypatch.setenv("BEVIS_BATCH_SIZE", "10")
    monkeypatch.setenv("BEVIS_WORKERS", "1")
    monkeypatch.setenv("BEVIS_FAULT", "sign:1")
    migrate("sources", get_settings().resolved_source_url())
    rid = make_run(20)
    ids = batches.plan(rid)
    for bid in ids:
        with contextlib.suppress(Exception):
            batches.run_step(bid, "sign")
    flow.finish(rid)
    assert _run_row(rid).counts["batches_failed"] == 1

    [entry] = flow.rerun([ids[1]], through="sign", validate_signed=False)
    assert entry["ok"], entry
    # the run closes when every batch is past the steps it needs: here, signed
    from jobs.ledger.runs import finish_run

    finish_run(rid, "SUCCEEDED")
    counts = _run_row(rid).counts
    assert counts.get("batches_failed", 0) == 0, f"batches_failed {counts['batches_failed']}"
    assert counts["batches_signed"] == 2 and counts["certificates"] == 20
    shown = json.loads(_cli(["runs", "show", rid, "--json"]).stdout)
    assert shown["counts"].get("batches_failed", 0) == 0, (
        f"runs show says batches_failed {shown['counts']['batches_failed']} after a "
        "successful rerun"
    )
