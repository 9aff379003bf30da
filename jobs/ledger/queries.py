"""Read queries over the ledger, for the CLI and the reports: the one way in that is not
a step. Each returns plain rows; none migrates or writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, select

from jobs.ledger.models import Batch, BatchState
from jobs.settings import Settings, get_settings


def read_ledger(settings: Settings | None = None) -> Engine:
    """The ledger engine for reading: never creates or migrates the database (see
    :func:`jobs.db.current_engine`). Once found current, later steps in this process need
    not migrate it either."""
    from jobs.db import current_engine
    from jobs.ledger import runs

    s = settings or get_settings()
    url = s.resolved_ledger_url()
    eng = current_engine("ledger", url, "BEVIS_LEDGER_URL")
    runs._MIGRATED.add(url)  # at head: ledger() has nothing to migrate
    return eng


def batches_of(
    run_id: str | None = None, states: Iterable[str] | None = None, settings: Settings | None = None
) -> list[Any]:
    """Batch rows (optionally of one run, in some states), oldest run first."""
    q = select(Batch).order_by(Batch.run_id, Batch.seq)
    if run_id:
        q = q.where(Batch.run_id == run_id)
    if states:
        q = q.where(Batch.state.in_([BatchState(x.upper()) for x in states]))
    with read_ledger(settings).connect() as conn:
        return list(conn.execute(q).all())


def recent_runs(limit: int, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` runs with their live counts (batches, failures, certificates)."""
    from jobs.ledger.models import Run
    from jobs.ledger.runs import run_counts

    with read_ledger(settings).connect() as conn:
        rows = conn.execute(select(Run).order_by(Run.started_at.desc()).limit(limit)).all()
        return [{"run": r, "counts": run_counts(conn, r.id)} for r in rows]


def run_with_counts(run_id: str, settings: Settings | None = None) -> tuple[Any, dict] | None:
    """One run's row and its counts (recorded, overlaid by the live ones); None if unknown."""
    from jobs.ledger.models import Run
    from jobs.ledger.runs import run_counts

    with read_ledger(settings).connect() as conn:
        r = conn.execute(select(Run).where(Run.id == run_id)).first()
        if r is None:
            return None
        return r, {**(r.counts or {}), **run_counts(conn, run_id)}


def certificate_history(uvci: str, settings: Settings | None = None) -> tuple[Any, Any, list]:
    """A certificate's row, its batch's state and its delivery attempts, in order; the row
    is None when the ledger has no such certificate."""
    from jobs.ledger.models import Certificate, Delivery

    with read_ledger(settings).connect() as conn:
        c = conn.execute(select(Certificate).where(Certificate.uvci == uvci)).first()
        if c is None:
            return None, None, []
        b = conn.execute(select(Batch.state).where(Batch.id == c.batch_id)).scalar_one()
        deliveries = conn.execute(
            select(Delivery).where(Delivery.uvci == uvci).order_by(Delivery.id)
        ).all()
    return c, b, list(deliveries)


def orders_of_uvcis(uvcis: list[str], s: Settings) -> dict[str, str]:
    """UVCI -> order id of the certificates the ledger already holds, for these UVCIs."""
    from jobs.db import engine, migrate
    from jobs.ledger.models import Certificate

    url = s.resolved_ledger_url()
    migrate("ledger", url)
    found: dict[str, str] = {}
    with engine(url).connect() as conn:
        for i in range(0, len(uvcis), 5000):
            chunk = uvcis[i : i + 5000]
            rows = conn.execute(
                select(Certificate.uvci, Certificate.order_id).where(Certificate.uvci.in_(chunk))
            )
            found.update({u: o for u, o in rows})
    return found
