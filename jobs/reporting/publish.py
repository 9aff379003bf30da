"""Issuance statistics: reporting tables computed from the ledger, published with small
counts suppressed.

Why from the ledger: a run may be retried batch by batch, so the only trustworthy figures
are those in the ledger after the fact — never counts passed between tasks. :func:`refresh`
recomputes every reporting table from the ledger and replaces the old facts in one
transaction, so it is idempotent and a report after a partial rerun is right.

The reporting tables (``rpt_*``) hold exact aggregates *without identity data*: no pid, no
order id, no UVCI. They are for people with access to the reporting database. What leaves
it — the HTML report and the Parquet/CSV exports of :func:`build_report` — goes through
:mod:`transforms.aggregate` (primary + secondary small-count suppression).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Float,
    Integer,
    SmallInteger,
    String,
    case,
    cast,
    delete,
    func,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.log import get_logger
from jobs.settings import Settings, get_settings

log = get_logger(__name__)

DIGITAL_REFERENCE = 0.73  # share delivered digitally that management followed
PENDING = "PENDING"  # channel of a certificate whose delivery has not ended yet
UNKNOWN = "unknown"  # label of a missing dimension value in published tables
NO_OPERATOR = "(none)"  # operator of a certificate without a successful delivery attempt
# Latency histogram: bucket upper bounds in ms, 2^(k/8) — about 9 % wide, mergeable over days
LATENCY_BUCKETS_PER_OCTAVE = 8


class ReportingBase(DeclarativeBase):
    pass


class IssuanceFact(ReportingBase):
    """Certificates issued, by day (UTC, of issued_at) and every reporting dimension."""

    __tablename__ = "rpt_issuance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    run_id: Mapped[str] = mapped_column(String(64))
    county: Mapped[str | None] = mapped_column(String(2))
    age_band: Mapped[str | None] = mapped_column(String(8))
    cert_type: Mapped[str] = mapped_column(String(1))
    product: Mapped[str | None] = mapped_column(String(32))
    dn: Mapped[int | None] = mapped_column(SmallInteger)
    sd: Mapped[int | None] = mapped_column(SmallInteger)
    channel: Mapped[str] = mapped_column(String(16))  # Certificate.outcome, or PENDING
    operator: Mapped[str | None] = mapped_column(String(64))  # of the successful attempt
    certificates: Mapped[int] = mapped_column(Integer)


class PeopleFact(ReportingBase):
    """Distinct people reached, by the day of their first certificate (additive over days,
    so the people reached up to a day is a sum); ``new_persons_digital``: how many of them
    have received at least one certificate digitally (so far)."""

    __tablename__ = "rpt_people"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    new_persons: Mapped[int] = mapped_column(Integer, default=0)
    new_persons_digital: Mapped[int] = mapped_column(Integer, default=0)


class QuarantineFact(ReportingBase):
    """Quarantine entries (records held back) by day, step and reason."""

    __tablename__ = "rpt_quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    step: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str] = mapped_column(String(64))
    entries: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)  # distinct orders in this cell


class DeliveryFact(ReportingBase):
    """Delivery attempts by day, channel, operator and status, with exact latency
    percentiles of that day (ms)."""

    __tablename__ = "rpt_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    channel: Mapped[str] = mapped_column(String(16))
    operator: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    latency_n: Mapped[int] = mapped_column(Integer, default=0)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p90_ms: Mapped[float | None] = mapped_column(Float)
    latency_p99_ms: Mapped[float | None] = mapped_column(Float)
    latency_max_ms: Mapped[float | None] = mapped_column(Float)


class LatencyBucket(ReportingBase):
    """Latency histogram (mergeable over days, unlike percentiles): attempts per bucket."""

    __tablename__ = "rpt_latency_hist"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    le_ms: Mapped[float] = mapped_column(Float)  # bucket upper bound
    attempts: Mapped[int] = mapped_column(Integer)


class RunFact(ReportingBase):
    """One issuance run: state, size, wall time and throughput."""

    __tablename__ = "rpt_runs"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, index=True)  # of started_at (UTC)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(String(16))
    batches: Mapped[int] = mapped_column(Integer)
    certificates: Mapped[int] = mapped_column(Integer)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    certificates_per_second: Mapped[float | None] = mapped_column(Float)
    step_seconds: Mapped[dict] = mapped_column(JSON, default=dict)


class RunStepFact(ReportingBase):
    """Seconds spent per step of a run (per-batch steps summed) and the step's throughput."""

    __tablename__ = "rpt_run_steps"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(32), primary_key=True)
    seconds: Mapped[float] = mapped_column(Float)
    certificates_per_second: Mapped[float | None] = mapped_column(Float)


class RefreshLog(ReportingBase):
    """When the facts were last recomputed, and from how many ledger rows."""

    __tablename__ = "rpt_refresh"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    certificates: Mapped[int] = mapped_column(Integer)
    persons: Mapped[int] = mapped_column(Integer)
    deliveries: Mapped[int] = mapped_column(Integer)
    quarantine: Mapped[int] = mapped_column(Integer)
    runs: Mapped[int] = mapped_column(Integer)


FACT_TABLES = (
    IssuanceFact,
    PeopleFact,
    QuarantineFact,
    DeliveryFact,
    LatencyBucket,
    RunStepFact,
    RunFact,
)


# --- refresh -------------------------------------------------------------------------------
def _day(col, dialect: str):
    """The UTC calendar day of a timestamp column, in SQL."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", col), Date)
    return func.date(col)  # SQLite stores the UTC wall time as text


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def latency_bucket(ms: float) -> float:
    """The upper bound of the histogram bucket holding ``ms`` (2^(k/8) ms, k >= 0)."""
    import math

    if ms <= 1.0:
        return 1.0
    k = math.ceil(math.log2(ms) * LATENCY_BUCKETS_PER_OCTAVE - 1e-9)
    return round(2 ** (k / LATENCY_BUCKETS_PER_OCTAVE), 3)


@dataclass(frozen=True)
class RefreshResult:
    certificates: int
    persons: int
    deliveries: int
    quarantine: int
    runs: int
    rows: dict[str, int]


def refresh(settings: Settings | None = None) -> RefreshResult:
    """Recompute every reporting table from the ledger and replace the old facts (one
    transaction in the reporting database; idempotent)."""
    import pandas as pd

    from jobs.db import engine, migrate
    from jobs.ledger.models import (
        Batch,
        Certificate,
        Delivery,
        DeliveryStatus,
        QuarantineEntry,
        Run,
    )

    s = settings or get_settings()
    ledger_url, reporting_url = s.resolved_ledger_url(), s.resolved_reporting_url()
    migrate("ledger", ledger_url)
    migrate("reporting", reporting_url)
    led = engine(ledger_url)
    dialect = led.dialect.name
    rows: dict[str, list[dict]] = {t.__tablename__: [] for t in FACT_TABLES}

    with led.connect() as conn:
        # issuance: the operator is that of the successful attempt
        ok = (
            select(Delivery.uvci, func.max(Delivery.operator).label("operator"))
            .where(Delivery.status.in_([DeliveryStatus.DELIVERED, DeliveryStatus.QUEUED_PAPER]))
            .group_by(Delivery.uvci)
            .subquery()
        )
        day = _day(Certificate.issued_at, dialect)
        dims = (
            day,
            Certificate.run_id,
            Certificate.county,
            Certificate.age_band,
            Certificate.cert_type,
            Certificate.product,
            Certificate.dn,
            Certificate.sd,
            Certificate.outcome,
            ok.c.operator,
        )
        q = (
            select(*dims, func.count())
            .select_from(Certificate)
            .outerjoin(ok, ok.c.uvci == Certificate.uvci)
            .group_by(*dims)
        )
        for d, run_id, county, age, ctype, prod, dn, sd, outcome, operator, n in conn.execute(q):
            rows["rpt_issuance"].append(
                {
                    "day": _as_date(d),
                    "run_id": run_id,
                    "county": county,
                    "age_band": age,
                    "cert_type": ctype,
                    "product": prod,
                    "dn": dn,
                    "sd": sd,
                    "channel": outcome.value if outcome is not None else PENDING,
                    "operator": operator,
                    "certificates": n,
                }
            )

        # people reached: distinct pids by the day of their first certificate, and how many
        # of them have received a certificate digitally (ever)
        digital = case((Certificate.outcome == "DIGITAL", 1), else_=0)
        first = (
            select(
                Certificate.pid,
                func.min(Certificate.issued_at).label("first"),
                func.max(digital).label("digital"),
            )
            .group_by(Certificate.pid)
            .subquery()
        )
        fday = _day(first.c.first, dialect)
        rows["rpt_people"] = sorted(
            (
                {"day": _as_date(d), "new_persons": n, "new_persons_digital": int(nd or 0)}
                for d, n, nd in conn.execute(
                    select(fday, func.count(), func.sum(first.c.digital)).group_by(fday)
                )
            ),
            key=lambda r: r["day"],
        )

        qday = _day(QuarantineEntry.at, dialect)
        q = select(
            qday,
            QuarantineEntry.step,
            QuarantineEntry.reason_code,
            func.count(),
            func.count(QuarantineEntry.order_id.distinct()),
        ).group_by(qday, QuarantineEntry.step, QuarantineEntry.reason_code)
        for d, step, reason, n, orders in conn.execute(q):
            rows["rpt_quarantine"].append(
                {
                    "day": _as_date(d),
                    "step": step,
                    "reason_code": reason,
                    "entries": n,
                    "orders": orders,
                }
            )

        dday = _day(Delivery.at, dialect)
        frame = pd.DataFrame(
            [
                tuple(r)  # plain tuples: pandas probes Row objects attribute by attribute
                for r in conn.execute(
                    select(
                        dday,
                        Delivery.channel,
                        Delivery.operator,
                        Delivery.status,
                        Delivery.latency_ms,
                    )
                )
            ],
            columns=["day", "channel", "operator", "status", "latency_ms"],
        )
        rows["rpt_delivery"], rows["rpt_latency_hist"] = _delivery_facts(frame)

        certs_per_run = dict(
            conn.execute(
                select(Certificate.run_id, func.count()).group_by(Certificate.run_id)
            ).all()
        )
        batches_per_run = dict(
            conn.execute(select(Batch.run_id, func.count()).group_by(Batch.run_id)).all()
        )
        for run in conn.execute(select(Run)).mappings():
            started, finished = _as_utc(run["started_at"]), _as_utc(run["finished_at"])
            certs = int(certs_per_run.get(run["id"], 0))
            wall = (finished - started).total_seconds() if finished and started else None
            steps = {k: float(v) for k, v in (run["step_seconds"] or {}).items()}
            rows["rpt_runs"].append(
                {
                    "run_id": run["id"],
                    "day": started.date(),
                    "started_at": started,
                    "finished_at": finished,
                    "state": str(getattr(run["state"], "value", run["state"])),
                    "batches": int(batches_per_run.get(run["id"], 0)),
                    "certificates": certs,
                    "wall_seconds": wall,
                    "certificates_per_second": certs / wall if wall else None,
                    "step_seconds": steps,
                }
            )
            for step, secs in steps.items():
                rows["rpt_run_steps"].append(
                    {
                        "run_id": run["id"],
                        "step": step,
                        "seconds": secs,
                        "certificates_per_second": certs / secs if secs > 0 else None,
                    }
                )

    totals = {
        "certificates": sum(r["certificates"] for r in rows["rpt_issuance"]),
        "persons": sum(r["new_persons"] for r in rows["rpt_people"]),
        "deliveries": sum(r["attempts"] for r in rows["rpt_delivery"]),
        "quarantine": sum(r["entries"] for r in rows["rpt_quarantine"]),
        "runs": len(rows["rpt_runs"]),
    }
    with engine(reporting_url).begin() as conn:
        for table in FACT_TABLES:
            conn.execute(delete(table))
        for table in reversed(FACT_TABLES):
            data = rows[table.__tablename__]
            for i in range(0, len(data), 5000):
                conn.execute(table.__table__.insert(), data[i : i + 5000])
        conn.execute(RefreshLog.__table__.insert(), [{"refreshed_at": datetime.now(UTC), **totals}])
    result = RefreshResult(**totals, rows={k: len(v) for k, v in rows.items()})
    log.info("reporting refreshed", **totals)
    return result


def _delivery_facts(frame) -> tuple[list[dict], list[dict]]:
    """Attempts and exact latency percentiles per (day, channel, operator, status), and the
    latency histogram per (day, channel, status)."""
    import pandas as pd

    if frame.empty:
        return [], []
    frame = frame.assign(
        day=frame["day"].map(_as_date),
        status=frame["status"].map(lambda v: getattr(v, "value", v)),
        operator=frame["operator"].astype(object).where(frame["operator"].notna(), None),
    )
    keys = ["day", "channel", "operator", "status"]
    frame["operator"] = frame["operator"].fillna("\x00")  # groupby-safe stand-in for NULL
    frame["latency_ms"] = pd.to_numeric(frame["latency_ms"], errors="coerce")
    grouped = frame.groupby(keys, sort=True)["latency_ms"]
    stats = grouped.agg(attempts="size", latency_n="count", latency_max_ms="max")
    q = grouped.quantile([0.5, 0.9, 0.99]).unstack()
    stats["latency_p50_ms"], stats["latency_p90_ms"], stats["latency_p99_ms"] = (
        q[0.5],
        q[0.9],
        q[0.99],
    )
    facts = []
    for key, row in stats.iterrows():
        fact = dict(zip(keys, key, strict=True))
        fact["operator"] = None if fact["operator"] == "\x00" else fact["operator"]
        fact["attempts"], fact["latency_n"] = int(row["attempts"]), int(row["latency_n"])
        for c in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"):
            fact[c] = None if pd.isna(row[c]) else float(row[c])
        facts.append(fact)
    lat = frame.dropna(subset=["latency_ms"])
    hist = []
    if not lat.empty:
        lat = lat.assign(le_ms=lat["latency_ms"].astype(float).map(latency_bucket))
        for (d, ch, st, le), n in lat.groupby(["day", "channel", "status", "le_ms"]).size().items():
            hist.append(
                {"day": d, "channel": ch, "status": st, "le_ms": float(le), "attempts": int(n)}
            )
    return facts, hist


# --- publication ---------------------------------------------------------------------------
# Linked tables of certificates (they share margins; see transforms.aggregate)
ISSUANCE_TABLES: dict[str, tuple[str, ...]] = {
    "certificates_by_day_channel": ("day", "channel"),
    "certificates_by_county_age_band": ("county", "age_band"),
    "certificates_by_product_dose": ("product", "dose"),
    "certificates_by_type_channel": ("cert_type", "channel"),
    "certificates_by_operator_channel": ("operator", "channel"),
    "certificates_by_run": ("run",),
}


@dataclass
class Publication:
    """Everything a report publishes, already suppressed. ``tables`` are pandas frames (one
    per export); ``figures`` are headline numbers (None when withheld)."""

    date_from: date | None
    date_to: date | None
    threshold: int
    tables: dict[str, Any]
    figures: dict[str, Any]
    refreshed_at: datetime | None


def _label(v: Any) -> str:
    return UNKNOWN if v is None or v == "" else str(v)


def _dimension_label(dim: str, raw: tuple) -> str:
    """The published label of a dimension value read from the facts."""
    if dim == "day":
        return _as_date(raw[0]).isoformat()
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
    refreshed_at = _as_utc(refreshed_at)

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


# --- synthetic ledger (tests and ``bevis bench report``) ------------------------------------
COUNTIES = ("01", "03", "04", "05", "06", "07", "08", "09", "10", "12", "13", "14", "17",
            "18", "19", "20", "21", "22", "23", "24", "25")  # fmt: skip
AGE_BANDS = ("12-15", "16-17", "18-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89")
PRODUCTS = ("EU/1/20/1528", "EU/1/20/1507", "EU/1/21/1529", "EU/1/20/1525")
REASONS = ("invalid_check_digit", "future_vaccination_date", "unknown_product",
           "dose_out_of_range", "missing_name", "no_vaccination", "schema_invalid")  # fmt: skip
OPERATORS = ("kivra", "min-myndighetspost", "billo")


def synthetic_ledger(
    certificates: int,
    url: str,
    seed: int = 0,
    days: int = 10,
    start: date = date(2026, 11, 1),
    runs: int = 3,
) -> dict[str, int]:
    """Fill the ledger at ``url`` with plausible rows written directly through the models
    (runs, batches, certificates, deliveries with retries and latencies, quarantine), for
    tests and benchmarks. Pseudonymous ids only; deterministic for a seed. Returns counts."""
    from jobs.db import engine, migrate
    from jobs.ledger.models import Batch, Certificate, Delivery, QuarantineEntry, Run

    migrate("ledger", url)
    rng = random.Random(seed)
    tag = f"s{seed}"
    base = datetime(start.year, start.month, start.day, 6, tzinfo=UTC)
    run_ids = [f"syn-{tag}-r{i}" for i in range(runs)]
    run_rows, batch_rows, cert_rows, deliv_rows, q_rows = [], [], [], [], []
    per_run = -(-certificates // runs) if runs else 0
    batch_size = 500
    for i, run_id in enumerate(run_ids):
        started = base + timedelta(days=i * max(1, days // runs), hours=i)
        n = max(0, min(per_run, certificates - i * per_run))
        run_rows.append(
            {
                "id": run_id,
                "started_at": started,
                "finished_at": started + timedelta(seconds=60 + n / 50),
                "state": "SUCCEEDED" if i % 4 != 3 else "FAILED",
                "parameters": {},
                "counts": {},
                "step_seconds": {
                    "extract": round(1 + n / 4000, 3),
                    "sign": round(2 + n / 900, 3),
                    "render": round(2 + n / 300, 3),
                    "deliver": round(1 + n / 700, 3),
                },
            }
        )
        for b in range(-(-n // batch_size)):
            batch_rows.append(
                {
                    "id": f"{run_id}-b{b:04d}",
                    "run_id": run_id,
                    "seq": b,
                    "size": min(batch_size, n - b * batch_size),
                    "state": "DELIVERED",
                    "attempts": 1,
                    "step_seconds": {},
                }
            )
    persons = max(1, int(certificates * 0.8))
    did = 0
    for c in range(certificates):
        r = min(c // per_run, runs - 1) if per_run else 0
        run_id = run_ids[r]
        batch_id = f"{run_id}-b{(c - r * per_run) // batch_size:04d}"
        day = rng.choices(range(days), weights=[1 + (d % 7 < 5) * 3 for d in range(days)])[0]
        issued = base + timedelta(days=day, seconds=rng.randrange(0, 16 * 3600))
        uvci = f"URN:UVCI:01:SE:EHM/{tag}{c:09d}"
        roll = rng.random()
        digital_share = 0.6 + 0.25 * day / max(1, days - 1)
        outcome = (
            "DIGITAL" if roll < digital_share else "PAPER" if roll < 0.97 else
            ("DEFERRED" if roll < 0.99 else None)
        )  # fmt: skip
        dn = rng.choice((1, 2, 2, 3, 3, 3))
        cert_rows.append(
            {
                "uvci": uvci,
                "order_id": f"o-{tag}-{c}",
                "pid": f"pid-{tag}-{rng.randrange(persons):08d}",
                "run_id": run_id,
                "batch_id": batch_id,
                "cert_type": rng.choices("vtr", weights=(95, 3, 2))[0],
                "kid": "AAAAAAAAAAA=",
                "iat": int(issued.timestamp()),
                "exp": int(issued.timestamp()) + 365 * 86400,
                "hc1_sha256": f"{c:064x}",
                "county": rng.choice(COUNTIES) if rng.random() > 0.01 else None,
                "age_band": rng.choice(AGE_BANDS),
                "product": rng.choices(PRODUCTS, weights=(70, 20, 8, 2))[0],
                "dn": dn,
                "sd": max(dn, 2) if dn < 3 else 3,
                "issued_at": issued,
                "outcome": outcome,
            }
        )
        if outcome is None:
            continue
        t = issued + timedelta(minutes=5)
        attempts = []
        if outcome == "DIGITAL":
            op = rng.choices(OPERATORS, weights=(75, 20, 5))[0]
            for _ in range(rng.choices((0, 1, 2), weights=(90, 8, 2))[0]):
                attempts.append(("digital", op, "FAILED", 503))
            attempts.append(("digital", op, "DELIVERED", 201))
        elif outcome == "PAPER":
            if rng.random() < 0.7:
                attempts.append(("digital", None, "UNREACHABLE", None))
            attempts.append(("paper", "printhouse", "QUEUED_PAPER", None))
        else:
            attempts.append(("digital", rng.choice(OPERATORS), "DEFERRED", 503))
        for a, (channel, op, status, http) in enumerate(attempts, start=1):
            did += 1
            deliv_rows.append(
                {
                    "uvci": uvci,
                    "batch_id": batch_id,
                    "attempt": a,
                    "channel": channel,
                    "operator": op,
                    "status": status,
                    "http_status": http,
                    "latency_ms": round(rng.lognormvariate(4.0, 0.6), 2) if http else None,
                    "at": t + timedelta(seconds=a),
                }
            )
    q_n = max(1, certificates // 100)
    for q in range(q_n):
        day = rng.randrange(days)
        q_rows.append(
            {
                "run_id": run_ids[min(q * runs // q_n, runs - 1)],
                "step": "validate",
                "suite": "nvr_extract",
                "reason_code": rng.choices(REASONS, weights=(30, 5, 10, 10, 5, 30, 2))[0],
                "pid": f"pid-{tag}-q{q}",
                "order_id": f"oq-{tag}-{q}",
                "event_id": None,
                "at": base + timedelta(days=day, hours=1),
            }
        )
    with engine(url).begin() as conn:
        for model, data in (
            (Run, run_rows),
            (Batch, batch_rows),
            (Certificate, cert_rows),
            (Delivery, deliv_rows),
            (QuarantineEntry, q_rows),
        ):
            for i in range(0, len(data), 5000):
                conn.execute(model.__table__.insert(), data[i : i + 5000])
    return {
        "runs": len(run_rows),
        "batches": len(batch_rows),
        "certificates": len(cert_rows),
        "deliveries": len(deliv_rows),
        "quarantine": len(q_rows),
    }
