"""The whole flow end to end: through real Airflow (dag.test) and in-process (bevis issue).

These are the acceptance tests of the main command: every issued certificate verifies,
every order is accounted for, and a crash of one batch is mended by a retry without a
second certificate for any order.
"""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import func, select

pytestmark = pytest.mark.slow


def _certificates_per_order(settings) -> int:
    from jobs.db import engine
    from jobs.ledger.models import Certificate

    with engine(settings.resolved_ledger_url()).connect() as conn:
        rows = conn.execute(
            select(Certificate.order_id, func.count()).group_by(Certificate.order_id)
        ).all()
    return max((n for _, n in rows), default=0)


@pytest.mark.airflow
def test_demo_through_airflow_with_a_crash_drill(bevis_env, tmp_path, monkeypatch) -> None:
    """`bevis demo` on a small register, with batch 1's sign step crashing once: Airflow's
    retry finishes the batch, and the run's checks all hold."""
    from jobs.devtools.demo import run_demo
    from jobs.settings import get_settings

    monkeypatch.setenv("BEVIS_FAULT", "sign:1")
    out = tmp_path / "demo"
    summary = run_demo(160, out, batch_size=40)
    assert all(summary["checks"].values()), summary["checks"]
    assert summary["issued"] > 100
    assert summary["orders"] == summary["issued"] + summary["quarantined"] + summary["refused"]
    assert summary["airflow_task_states"]["finish"] == "success"
    written = json.loads((out / "summary.json").read_text())
    assert written["issued"] == summary["issued"]
    for key in ("report", "data_docs", "sample_pdf"):
        assert summary["paths"][key] and os.path.exists(summary["paths"][key]), key
    # the fault fired (its marker exists) and no order got a second certificate
    run_dir = out / "data" / "runs" / summary["run_id"]
    assert any(run_dir.rglob("*fault*")), "the fault switch did not fire"
    assert _certificates_per_order(get_settings()) == 1
    # no identity number in the summary, the report or the logs
    from jobs.log import IDENTITY_NUMBER

    for path in [
        out / "summary.json",
        out / "report" / "report.html",
        out / "logs" / "airflow.log",
    ]:
        if path.exists():
            assert not IDENTITY_NUMBER.search(path.read_text(errors="replace")), path


def test_issue_in_process_matches_the_register(bevis_env, monkeypatch) -> None:
    """`bevis issue` runs the same functions without Airflow; a second call issues nothing."""
    # a small register: a handful of defects is already a few per cent
    monkeypatch.setenv("BEVIS_QUARANTINE_THRESHOLD", "0.2")
    from jobs.db import migrate_all
    from jobs.devtools.demo import Simulator
    from jobs.devtools.seed import seed
    from jobs.flow import issue_run
    from jobs.settings import get_settings
    from signing.keys import init_dev_keys

    s = get_settings()
    migrate_all(s)
    init_dev_keys(s.resolved_key_dir())
    manifest = seed(120, seed=5, defect_rate=0.02)
    with Simulator(dict(os.environ), bevis_env / "sim.log") as sim:
        os.environ["BEVIS_MAILBOX_URL"] = sim.url
        try:
            first = issue_run(batch_size=30, progress=False)
            second = issue_run(batch_size=30, progress=False)
        finally:
            del os.environ["BEVIS_MAILBOX_URL"]
    assert first["state"] == "SUCCEEDED", first.get("error")
    assert first["orders"] == manifest.expected_extract.get("orders", first["orders"])
    assert first["orders"] == first["issued"] + first["quarantined"] + first["refused"]
    assert first["issued"] == (
        first["delivered_digitally"] + first["queued_for_paper"] + first["deferred"]
    )
    assert second["orders"] in (0, None) and second["issued"] == 0
    assert _certificates_per_order(s) == 1
