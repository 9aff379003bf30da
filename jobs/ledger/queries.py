"""Read queries over the ledger, for the CLI and the reports: the one way in that is not
a step. Each returns plain rows; none migrates or writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from jobs.ledger.models import Batch, BatchState
from jobs.ledger.runs import ledger
from jobs.settings import Settings


def batches_of(
    run_id: str | None = None, states: Iterable[str] | None = None, settings: Settings | None = None
) -> list[Any]:
    """Batch rows (optionally of one run, in some states), oldest run first."""
    q = select(Batch).order_by(Batch.run_id, Batch.seq)
    if run_id:
        q = q.where(Batch.run_id == run_id)
    if states:
        q = q.where(Batch.state.in_([BatchState(x.upper()) for x in states]))
    with ledger(settings).connect() as conn:
        return list(conn.execute(q).all())
