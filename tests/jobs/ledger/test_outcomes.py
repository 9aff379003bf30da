"""WITHDRAWN in the ledger (jobs/ledger/outcomes.py), on real SQLite and PostgreSQL: the new
outcome fits the existing column (no migration), and it is set only where no final outcome
is."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.ledger.models import Batch, BatchState, Certificate, Outcome, Run, RunState
from jobs.ledger.outcomes import answered, mark_withdrawn, withdrawn_of
from jobs.ledger.runs import ledger
from jobs.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, bevis_env: Path) -> Settings:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return Settings(data_dir=bevis_env, ledger_url=url)


def _ledger_with(settings: Settings, outcomes: dict[str, Outcome | None]) -> None:
    now = datetime.now(UTC)
    with ledger(settings).begin() as conn:
        conn.execute(
            Run.__table__.insert(),
            {"id": "run-o", "started_at": now, "state": RunState.RUNNING, "parameters": {},
             "counts": {}, "step_seconds": {}},
        )  # fmt: skip
        conn.execute(
            Batch.__table__.insert(),
            {"id": "run-o-b0000", "run_id": "run-o", "seq": 0, "size": len(outcomes),
             "state": BatchState.RENDERED, "attempts": 1, "step_seconds": {}, "planned_at": now},
        )  # fmt: skip
        for i, (order_id, outcome) in enumerate(outcomes.items()):
            conn.execute(
                Certificate.__table__.insert(),
                {"uvci": f"URN:UVCI:01:SE:EHM/T{i:010d}", "order_id": order_id, "pid": f"p{i}",
                 "run_id": "run-o", "batch_id": "run-o-b0000", "cert_type": "v", "kid": "k",
                 "iat": 1, "exp": 2, "hc1_sha256": "0" * 64, "issued_at": now,
                 "outcome": outcome, "outcome_reason": "x" if outcome else None},
            )  # fmt: skip


def test_mark_withdrawn_only_where_no_final_outcome(settings: Settings) -> None:
    _ledger_with(
        settings,
        {
            "O-open": None,
            "O-deferred": Outcome.DEFERRED,
            "O-digital": Outcome.DIGITAL,
            "O-paper": Outcome.PAPER,
        },
    )
    asked = ["O-open", "O-deferred", "O-digital", "O-paper", "O-unsigned"]
    marked = mark_withdrawn(asked, settings)
    assert set(marked) == {"O-open", "O-deferred"}
    assert all(u.startswith("URN:UVCI:") for u in marked.values())
    with ledger(settings).connect() as conn:
        got = dict(conn.execute(select(Certificate.order_id, Certificate.outcome)).all())
        reasons = dict(conn.execute(select(Certificate.order_id, Certificate.outcome_reason)).all())
    assert got == {
        "O-open": Outcome.WITHDRAWN,
        "O-deferred": Outcome.WITHDRAWN,
        "O-digital": Outcome.DIGITAL,
        "O-paper": Outcome.PAPER,
    }
    assert reasons["O-open"] == reasons["O-deferred"] == "consent_withdrawn"
    assert mark_withdrawn(asked, settings) == {}  # idempotent
    assert set(withdrawn_of(asked, settings)) == {"O-open", "O-deferred"}
    assert answered(asked, settings) == {"O-digital", "O-paper"}
    assert mark_withdrawn([], settings) == {}
