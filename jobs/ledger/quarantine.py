"""Quarantine: records held back from issuance, with the reason — never dropped silently.

Every step that refuses a record calls :func:`record`: the entries go to the run's Parquet
file for that step (``runs/<run>/quarantine/<step>.parquet``) and to the ledger table
``quarantine``. Entries carry the pseudonymous id and order id only. Recording the same
entries again (a rerun) changes nothing.
"""

from __future__ import annotations

from typing import Any

from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import RunPaths, write_parquet_atomic

log = get_logger(__name__)

COLUMNS = ("suite", "expectation", "reason_code", "pid", "order_id", "event_id", "detail")


def _as_rows(entries: Any) -> list[dict[str, Any]]:
    if hasattr(entries, "to_pylist"):  # pyarrow Table
        return entries.to_pylist()
    if hasattr(entries, "to_dict"):  # pandas DataFrame
        return entries.to_dict("records")
    return list(entries)


def record(run_id: str, step: str, entries: Any, settings: Settings | None = None) -> int:
    """Quarantine ``entries`` (Table, DataFrame or dicts with the QUARANTINE columns; missing
    columns are null) for ``step`` of ``run_id``. Replaces that step's Parquet file and
    inserts ledger rows that are not there yet. Returns the number of entries."""
    import pyarrow as pa
    from sqlalchemy import select

    from jobs.db import engine, migrate
    from jobs.ledger.models import QuarantineEntry
    from transforms.schemas import QUARANTINE

    s = settings or get_settings()
    rows = []
    for r in _as_rows(entries):
        row = {c: (None if r.get(c) is None else str(r.get(c))) for c in COLUMNS}
        if not row["reason_code"]:
            raise ValueError(f"quarantine entry for order {row['order_id']} has no reason code")
        if row["detail"]:
            row["detail"] = row["detail"][:500]
        rows.append({"run_id": run_id, "step": step, **row})

    table = pa.Table.from_pylist(rows, schema=QUARANTINE)
    write_parquet_atomic(table, RunPaths.of(run_id, s).quarantine(step))

    url = s.resolved_ledger_url()
    migrate("ledger", url)
    key = ("reason_code", "order_id", "event_id")
    with engine(url).begin() as conn:
        existing = {
            tuple(r)
            for r in conn.execute(
                select(
                    QuarantineEntry.reason_code, QuarantineEntry.order_id, QuarantineEntry.event_id
                ).where(QuarantineEntry.run_id == run_id, QuarantineEntry.step == step)
            )
        }
        new = [r for r in rows if tuple(r[k] for k in key) not in existing]
        # de-duplicate within the call too
        seen: set[tuple] = set()
        unique = []
        for r in new:
            k = tuple(r[c] for c in key)
            if k not in seen:
                seen.add(k)
                unique.append(r)
        if unique:
            conn.execute(QuarantineEntry.__table__.insert(), unique)
    if rows:
        reasons: dict[str, int] = {}
        for r in rows:
            reasons[r["reason_code"]] = reasons.get(r["reason_code"], 0) + 1
        log.info("quarantined", run_id=run_id, step=step, entries=len(rows), reasons=reasons)
    return len(rows)


def read(run_id: str, settings: Settings | None = None):
    """All quarantine entries of a run as a pyarrow Table (every step)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.schemas import QUARANTINE

    folder = RunPaths.of(run_id, settings).quarantine_dir
    parts = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))] if folder.exists() else []
    return pa.concat_tables(parts) if parts else QUARANTINE.empty_table()
