"""Issuance statistics published with small counts suppressed: :func:`publish` reads the
reporting tables (:mod:`jobs.reporting.tables`, computed from the ledger) and builds the
:class:`~jobs.reporting.publication.Publication`; :func:`build_report` writes the HTML
report and the Parquet/CSV exports. Everything that leaves the reporting database goes
through :mod:`transforms.aggregate` (primary + secondary small-count suppression).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from jobs.log import get_logger
from jobs.reporting.publication import NO_OPERATOR, UNKNOWN, Publication
from jobs.reporting.tables import (
    DeliveryFact,
    IssuanceFact,
    LatencyBucket,
    PeopleFact,
    QuarantineFact,
    RefreshLog,
    RunFact,
    RunStepFact,
    as_date,
    as_utc,
    refresh,
)
from jobs.settings import Settings, get_settings

log = get_logger(__name__)

# Linked tables of certificates (they share margins; see transforms.aggregate)
ISSUANCE_TABLES: dict[str, tuple[str, ...]] = {
    "certificates_by_day_channel": ("day", "channel"),
    "certificates_by_county_age_band": ("county", "age_band"),
    "certificates_by_product_dose": ("product", "dose"),
    "certificates_by_type_channel": ("cert_type", "channel"),
    "certificates_by_operator_channel": ("operator", "channel"),
    "certificates_by_run": ("run",),
}


def _label(v: Any) -> str:
    return UNKNOWN if v is None or v == "" else str(v)


def _dimension_label(dim: str, raw: tuple) -> str:
    """The published label of a dimension value read from the facts."""
    if dim == "day":
        return as_date(raw[0]).isoformat()
    if dim == "dose":
        dn, sd = raw
        return f"{dn}/{sd}" if dn is not None and sd is not None else UNKNOWN
    if dim == "operator":
        return raw[0] or NO_OPERATOR
    return _label(raw[0])


def _in_range(d: date, date_from: date | None, date_to: date | None) -> bool:
    return (date_from is None or d >= date_from) and (date_to is None or d <= date_to)


def publish(
    date_from: date | None = None,
    date_to: date | None = None,
    settings: Settings | None = None,
) -> Publication:
    """Read the reporting tables, restrict them to [date_from, date_to] (UTC days,
    inclusive) and suppress small counts. Nothing below the threshold leaves this function."""
    import pandas as pd

    from jobs.db import engine, migrate
    from transforms.aggregate import (
        key_of,
        linked_cells,
        suppress,
        suppress_tables,
        suppress_together,
        table_cells,
        table_rows,
    )

    s = settings or get_settings()
    t = s.small_count_threshold
    url = s.resolved_reporting_url()
    migrate("reporting", url)
    tables: dict[str, pd.DataFrame] = {}
    figures: dict[str, Any] = {}

    def in_range(q, model, lower: bool = True):
        if date_from is not None and lower:
            q = q.where(model.day >= date_from)
        if date_to is not None:
            q = q.where(model.day <= date_to)
        return q

    # every certificate table is one GROUP BY over the facts (not the facts themselves)
    columns = {
        "day": (IssuanceFact.day,),
        "channel": (IssuanceFact.channel,),
        "county": (IssuanceFact.county,),
        "age_band": (IssuanceFact.age_band,),
        "product": (IssuanceFact.product,),
        "dose": (IssuanceFact.dn, IssuanceFact.sd),
        "cert_type": (IssuanceFact.cert_type,),
        "operator": (IssuanceFact.operator,),
        "run": (IssuanceFact.run_id,),
    }
    aggregates: dict[tuple[str, ...], dict] = {}
    with engine(url).connect() as conn:
        refreshed_at = conn.execute(select(func.max(RefreshLog.refreshed_at))).scalar()
        for dims in ISSUANCE_TABLES.values():
            cols = [c for d in dims for c in columns[d]]
            q = in_range(
                select(*cols, func.sum(IssuanceFact.certificates)).group_by(*cols), IssuanceFact
            )
            agg = aggregates.setdefault(dims, {})
            for row in conn.execute(q):
                values, i = {}, 0
                for d in dims:
                    raw = row[i : i + len(columns[d])]
                    i += len(columns[d])
                    values[d] = _dimension_label(d, raw)
                k = key_of(**values)
                agg[k] = agg.get(k, 0) + int(row[-1])
        people = conn.execute(
            in_range(select(PeopleFact.__table__), PeopleFact, lower=False).order_by(PeopleFact.day)
        ).all()
        quarantine = conn.execute(in_range(select(QuarantineFact.__table__), QuarantineFact)).all()
        delivery = conn.execute(in_range(select(DeliveryFact.__table__), DeliveryFact)).all()
        hist = conn.execute(in_range(select(LatencyBucket.__table__), LatencyBucket)).all()
        runs = conn.execute(
            in_range(select(RunFact.__table__), RunFact).order_by(RunFact.started_at)
        ).all()
        steps = conn.execute(select(RunStepFact.__table__)).all()
    refreshed_at = as_utc(refreshed_at)

    # certificates: linked tables, one suppression problem
    has_certificates = any(aggregates.values())
    # delivery attempts (channel x status): a successful attempt per certificate makes
    # (digital, DELIVERED) equal to the DIGITAL certificates and (paper, QUEUED_PAPER) to the
    # PAPER ones, so the two problems are suppressed together
    dcounts: dict = {}
    for r in delivery:
        k = key_of(channel=r.channel, status=r.status)
        dcounts[k] = dcounts.get(k, 0) + r.attempts
    issued = tried = None
    if has_certificates and dcounts:
        issued, tried = suppress_together(
            [table_cells(aggregates), linked_cells(dcounts, [("channel", "status")])],
            [
                (0, key_of(channel="DIGITAL"), 1, key_of(channel="digital", status="DELIVERED")),
                (0, key_of(channel="PAPER"), 1, key_of(channel="paper", status="QUEUED_PAPER")),
            ],
            t,
        )
    elif has_certificates:
        issued = suppress(*table_cells(aggregates), t)
    elif dcounts:
        tried = suppress_tables(dcounts, [("channel", "status")], t)
    for name, dims in ISSUANCE_TABLES.items():
        rows = table_rows(issued, dims, "certificates") if issued else []
        tables[name] = _frame(rows, [*dims, "certificates", "suppressed"])
    figures["certificates"] = issued.published(()) if issued else 0

    # people reached: by the day of their first certificate, split by whether they have had
    # a certificate digitally; one suppression problem, so the split cannot be subtracted
    # out of the total. "To date" only without --from: otherwise it would differ from the
    # period's total by a count nobody suppressed.
    pcounts: dict = {}
    for r in people:
        if not _in_range(r.day, date_from, None):
            continue
        for digital, n in (
            ("yes", r.new_persons_digital),
            ("no", r.new_persons - r.new_persons_digital),
        ):
            if n:
                pcounts[key_of(day=r.day.isoformat(), digital=digital)] = n
    reached = suppress_tables(pcounts, [("day",), ("digital",)], t) if pcounts else None
    tables["people_reached_by_day"] = _frame(
        table_rows(reached, ("day",), "new_persons") if reached else [],
        ["day", "new_persons", "suppressed"],
    )
    tables["people_reached_digitally"] = _frame(
        table_rows(reached, ("digital",), "persons") if reached else [],
        ["digital", "persons", "suppressed"],
    )
    figures["people_new"] = reached.published(()) if reached else 0
    figures["people_to_date"] = figures["people_new"] if date_from is None else None
    yes = key_of(digital="yes")
    figures["people_digital"] = reached.published(yes) if reached and yes in reached.counts else 0

    # quarantine: day x reason
    qcounts: dict = {}
    for r in quarantine:
        k = key_of(day=r.day.isoformat(), reason=r.reason_code)
        qcounts[k] = qcounts.get(k, 0) + r.entries
    held = suppress_tables(qcounts, [("day", "reason")], t) if qcounts else None
    tables["quarantine_by_day_reason"] = _frame(
        table_rows(held, ("day", "reason"), "entries") if held else [],
        ["day", "reason", "entries", "suppressed"],
    )
    figures["quarantine_entries"] = held.published(()) if held else 0

    tables["delivery_attempts_by_channel_status"] = _frame(
        table_rows(tried, ("channel", "status"), "attempts") if tried else [],
        ["channel", "status", "attempts", "suppressed"],
    )
    figures["delivery_attempts"] = tried.published(()) if tried else 0
    tables["delivery_latency"] = _latency_table(hist, t)

    # runs: throughput only where the run's certificate count is published
    run_cells = {
        k: v
        for k, v in (issued.counts.items() if issued else [])
        if k and k[0][0] == "run" and len(k) == 1
    }
    run_rows = []
    step_by_run: dict[str, dict[str, float]] = {}
    for st in steps:
        step_by_run.setdefault(st.run_id, {})[st.step] = st.seconds
    for r in runs:
        key = key_of(run=r.run_id)
        published = issued.published(key) if issued and key in run_cells else None
        withheld = bool(issued and key in run_cells and issued.status[key])
        run_rows.append(
            {
                "run": r.run_id,
                "started_at": r.started_at,
                "state": r.state,
                "batches": r.batches,
                "certificates": published if not withheld else None,
                "wall_seconds": r.wall_seconds,
                "certificates_per_second": (
                    None if withheld or published is None else r.certificates_per_second
                ),
                **{f"{k}_seconds": v for k, v in sorted(step_by_run.get(r.run_id, {}).items())},
                "suppressed": issued.status[key] if withheld else "",
            }
        )
    tables["runs"] = pd.DataFrame(run_rows)
    return Publication(date_from, date_to, t, tables, figures, refreshed_at)


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    value = columns[-2]
    frame[value] = frame[value].astype("Int64")
    return frame


def _latency_table(hist: list, threshold: int):
    """Latency percentiles per channel and status from the merged histogram (upper bucket
    bounds, so "p90 ≤ x ms"); withheld for cells with fewer timed attempts than the
    threshold."""
    import pandas as pd

    by: dict[tuple[str, str], dict[float, int]] = {}
    for r in hist:
        b = by.setdefault((r.channel, r.status), {})
        b[r.le_ms] = b.get(r.le_ms, 0) + r.attempts
    rows = []
    for (channel, status), buckets in sorted(by.items()):
        n = sum(buckets.values())
        row: dict[str, Any] = {"channel": channel, "status": status}
        for q in (0.5, 0.9, 0.99):
            row[f"p{round(q * 100)}_ms_le"] = None if n < threshold else _hist_quantile(buckets, q)
        row["suppressed"] = "primary" if n < threshold else ""
        rows.append(row)
    # the number of timed attempts is not published: next to the attempts table it would
    # give away small counts (untimed attempts) and secondary-suppressed cells
    return pd.DataFrame(
        rows, columns=["channel", "status", "p50_ms_le", "p90_ms_le", "p99_ms_le", "suppressed"]
    )


def _hist_quantile(buckets: dict[float, int], q: float) -> float:
    n = sum(buckets.values())
    need = q * n
    acc = 0
    for le in sorted(buckets):
        acc += buckets[le]
        if acc >= need:
            return le
    return max(buckets)


def build_report(
    out_dir: Path,
    date_from: date | None = None,
    date_to: date | None = None,
    settings: Settings | None = None,
    *,
    refresh_first: bool = True,
) -> Path:
    """Refresh the reporting tables (unless told not to), then write ``report.html`` and
    one Parquet and one CSV file per published table under ``out_dir/data``. Returns the
    path of report.html. Every file is written atomically."""
    import pyarrow as pa

    from jobs.reporting.html import render_report
    from jobs.storage import atomic_path, write_parquet_atomic, write_text_atomic

    if date_from and date_to and date_from > date_to:
        raise ValueError(f"--from {date_from} is after --to {date_to}")
    s = settings or get_settings()
    if refresh_first:
        refresh(s)
    pub = publish(date_from, date_to, s)
    out_dir = Path(out_dir)
    data = out_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, frame in pub.tables.items():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        write_parquet_atomic(table, data / f"{name}.parquet", mode=0o644)
        with atomic_path(data / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    target = write_text_atomic(render_report(pub), out_dir / "report.html")
    log.info("report written", path=str(target), tables=len(pub.tables))
    return target


def report_for_run(run_id: str, settings: Settings | None = None) -> Path:
    """The report as the last step of a run: refreshed from the ledger, written to the
    run's folder (``RunPaths.report_dir``), covering every day in the ledger."""
    from jobs.storage import RunPaths

    return build_report(RunPaths.of(run_id, settings).report_dir, settings=settings)
