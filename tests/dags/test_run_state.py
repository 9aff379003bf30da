"""Under Airflow a failed run is a failed DAG run (issue 14, item 4): when the nvr_extract
gate stops the run in `validate`, the DAG run fails (not green because `finish` ran with
trigger rule all_done), and the ledger says FAILED with the suite and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.airflow]


def test_gate_failure_fails_the_dag_run(bevis_env: Path, tmp_path: Path, monkeypatch) -> None:
    from sqlalchemy import select

    from jobs.db import migrate_all
    from jobs.devtools import airflow_local
    from jobs.devtools.seed import seed
    from jobs.ledger.models import Run
    from jobs.ledger.runs import ledger
    from jobs.settings import get_settings
    from signing.keys import init_dev_keys

    monkeypatch.setenv("BEVIS_DEV_MODE", "1")
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.0")
    s = get_settings()
    migrate_all(s)
    init_dev_keys(s.resolved_key_dir())
    seed(60, seed=11, defect_rate=0.1)

    home = tmp_path / "airflow"
    env = airflow_local.airflow_env(home)
    airflow_local.prepare(home, env)
    result = airflow_local.run_dag_test(
        "dcc_issuance",
        {"batch_size": 50, "limit": None, "dry_run": False},
        env,
        tmp_path / "result.json",
        tmp_path / "airflow.log",
    )
    states = result["task_states"]
    assert states["validate"] == "failed", states
    assert result["state"] == "failed", (
        f"DAG run state {result['state']} although validate failed: {states}"
    )
    assert states["finish"] == "failed", states
    with ledger(s).connect() as conn:
        run = conn.execute(select(Run).where(Run.id == result["bevis_run"])).one()
    assert run.state.value == "FAILED" and run.failed_step == "validate_nvr_extract"
    assert "suite nvr_extract" in run.error and "quarantine_rate" in run.error
