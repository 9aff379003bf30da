"""The reporting tables, computed from the ledger.

Why from the ledger: a run may be retried batch by batch, so the only trustworthy figures
are those in the ledger after the fact — never counts passed between tasks. :func:`refresh`
recomputes every reporting table from the ledger and replaces the old facts in one
transaction, so it is idempotent and a report after a partial rerun is right.

The reporting tables (``rpt_*``) hold exact aggregates *without identity data*: no pid, no
order id, no UVCI. They are for people with access to the reporting database; what leaves
it goes through :mod:`jobs.reporting.publish`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
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
    or_,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobs.log import get_logger
from jobs.reporting.publication import PENDING
from jobs.settings import Settings, get_settings

log = get_logger(__name__)

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


def as_date(value: Any) -> date:
    """A day read from the database (a date, or ISO text on SQLite) as a date."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def as_utc(value: datetime | None) -> datetime | None:
    """A timestamp read from the database as an aware UTC datetime (naive means UTC)."""
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
                    "day": as_date(d),
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
        # a WITHDRAWN certificate (consent lapsed after signing) reached nobody
        reached = or_(Certificate.outcome.is_(None), Certificate.outcome != "WITHDRAWN")
        first = (
            select(
                Certificate.pid,
                func.min(Certificate.issued_at).label("first"),
                func.max(digital).label("digital"),
            )
            .where(reached)
            .group_by(Certificate.pid)
            .subquery()
        )
        fday = _day(first.c.first, dialect)
        rows["rpt_people"] = sorted(
            (
                {"day": as_date(d), "new_persons": n, "new_persons_digital": int(nd or 0)}
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
                    "day": as_date(d),
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
            started, finished = as_utc(run["started_at"]), as_utc(run["finished_at"])
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
        day=frame["day"].map(as_date),
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
