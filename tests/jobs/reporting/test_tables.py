"""Reporting tables and the published figures reconcile exactly with the ledger.

The expected figures are computed here, independently, from the ledger rows read through
the ORM (not through jobs.reporting.publish's SQL), on SQLite and on the real PostgreSQL server.
"""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from jobs.db import engine
from jobs.devtools.synthetic_ledger import synthetic_ledger
from jobs.ledger.models import Certificate, Delivery, QuarantineEntry
from jobs.reporting.publication import NO_OPERATOR, PENDING, UNKNOWN
from jobs.reporting.publish import build_report, publish
from jobs.reporting.tables import (
    DeliveryFact,
    IssuanceFact,
    PeopleFact,
    QuarantineFact,
    ReportingBase,
    refresh,
)
from jobs.settings import get_settings
from tests.transforms.test_aggregate import lp_ranges
from transforms.aggregate import Relation, Suppressed

IDENTITY_COLUMNS = {"pid", "order_id", "uvci", "person_id", "hc1_sha256", "event_id"}


def ledger_truth(url: str) -> dict:
    """Figures straight from the ledger rows."""
    with Session(engine(url)) as s:
        certs = s.scalars(select(Certificate)).all()
        by_day_channel = Counter(
            (c.issued_at.date().isoformat(), c.outcome.value if c.outcome else PENDING)
            for c in certs
        )
        by_county_age = Counter((c.county or UNKNOWN, c.age_band or UNKNOWN) for c in certs)
        first: dict[str, datetime] = {}
        digital: set[str] = set()
        for c in certs:
            first[c.pid] = min(first.get(c.pid, c.issued_at), c.issued_at)
            if c.outcome is not None and c.outcome.value == "DIGITAL":
                digital.add(c.pid)
        operators: dict[tuple, int] = Counter()
        for c in certs:
            ok = [
                d.operator for d in c.deliveries if d.status.value in ("DELIVERED", "QUEUED_PAPER")
            ]
            operators[
                (max(ok) if ok else NO_OPERATOR, c.outcome.value if c.outcome else PENDING)
            ] += 1
        quarantine = Counter(
            (q.at.date().isoformat(), q.reason_code)
            for q in s.scalars(select(QuarantineEntry)).all()
        )
        attempts = Counter((d.channel, d.status.value) for d in s.scalars(select(Delivery)).all())
    return {
        "certificates": len(certs),
        "by_day_channel": by_day_channel,
        "by_county_age": by_county_age,
        "by_operator_channel": operators,
        "people_by_day": Counter(d.date().isoformat() for d in first.values()),
        "people_digital_by_day": Counter(
            d.date().isoformat() for p, d in first.items() if p in digital
        ),
        "persons_digital": len(digital),
        "persons": len(first),
        "quarantine": quarantine,
        "attempts": attempts,
    }


def assert_reconciles(settings) -> None:
    url = settings.resolved_ledger_url()
    truth = ledger_truth(url)
    res = refresh(settings)
    assert res.certificates == truth["certificates"]
    assert res.persons == truth["persons"]

    # the (unsuppressed) reporting tables equal the ledger exactly
    with Session(engine(settings.resolved_reporting_url())) as s:
        facts = Counter()
        for f in s.scalars(select(IssuanceFact)):
            facts[(f.day.isoformat(), f.channel)] += f.certificates
        assert facts == truth["by_day_channel"]
        people = s.scalars(select(PeopleFact)).all()
        assert {p.day.isoformat(): p.new_persons for p in people} == dict(truth["people_by_day"])
        assert {
            p.day.isoformat(): p.new_persons_digital for p in people if p.new_persons_digital
        } == dict(truth["people_digital_by_day"])
        q = Counter()
        for f in s.scalars(select(QuarantineFact)):
            q[(f.day.isoformat(), f.reason_code)] += f.entries
        assert q == truth["quarantine"]
        att = Counter()
        for f in s.scalars(select(DeliveryFact)):
            att[(f.channel, f.status)] += f.attempts
        assert att == truth["attempts"]

    # the published tables: every published cell equals the ledger, totals are exact
    t = settings.small_count_threshold
    pub = publish(settings=settings)
    checks = [
        ("certificates_by_day_channel", ("day", "channel"), "certificates", truth["by_day_channel"]),
        ("certificates_by_county_age_band", ("county", "age_band"), "certificates", truth["by_county_age"]),
        ("certificates_by_operator_channel", ("operator", "channel"), "certificates", truth["by_operator_channel"]),
        ("quarantine_by_day_reason", ("day", "reason"), "entries", truth["quarantine"]),
        ("delivery_attempts_by_channel_status", ("channel", "status"), "attempts", truth["attempts"]),
    ]  # fmt: skip
    for name, (a, b), value, expected in checks:
        frame = pub.tables[name]
        withheld = 0
        for row in frame.to_dict("records"):
            ka, kb = row[a], row[b]
            true = sum(
                n
                for (x, y), n in expected.items()
                if (ka == "All" or x == ka) and (kb == "All" or y == kb)
            )
            v = row[value]
            if row["suppressed"]:
                withheld += 1
                assert v is None or v != v  # NA
            else:
                assert int(v) == true, (name, ka, kb)
                assert int(v) == 0 or int(v) >= t, (name, ka, kb, v)
        # the grand total is exact and published
        total = frame[(frame[a] == "All") & (frame[b] == "All")][value].iloc[0]
        assert int(total) == sum(expected.values())
        # cells below the threshold exist in the ledger, so suppression had work to do
        if name == "certificates_by_county_age_band":
            assert withheld > 0
    people = pub.tables["people_reached_by_day"]
    assert int(people[people["day"] == "All"]["new_persons"].iloc[0]) == truth["persons"]
    assert pub.figures["certificates"] == truth["certificates"]
    split = {
        r["digital"]: r["persons"]
        for r in pub.tables["people_reached_digitally"].to_dict("records")
    }
    assert split["All"] == truth["persons"]
    assert split["yes"] == pub.figures["people_digital"] == truth["persons_digital"]
    assert split["no"] == truth["persons"] - truth["persons_digital"]


@pytest.fixture
def ledger_sqlite(bevis_env):
    s = get_settings()
    synthetic_ledger(1500, s.resolved_ledger_url(), seed=3, days=8)
    return s


def test_reconciles_with_the_ledger_on_sqlite(ledger_sqlite) -> None:
    assert_reconciles(ledger_sqlite)


@pytest.mark.postgres
def test_reconciles_with_the_ledger_on_postgres(bevis_env, pg_url, monkeypatch) -> None:
    monkeypatch.setenv("BEVIS_LEDGER_URL", pg_url)
    s = get_settings()
    synthetic_ledger(1500, pg_url, seed=4, days=8)
    assert_reconciles(s)
    # the facts live in the same PostgreSQL database, with their own version table
    names = set(inspect(engine(pg_url)).get_table_names())
    assert {"rpt_issuance", "alembic_version_reporting", "certificates"} <= names


def test_refresh_is_idempotent_and_follows_a_rerun(ledger_sqlite) -> None:
    s = ledger_sqlite
    first = refresh(s)
    again = refresh(s)
    assert first.rows == again.rows
    assert first.certificates == again.certificates == 1500
    # a partial rerun issues more certificates: the next refresh sees them, nothing doubles
    synthetic_ledger(40, s.resolved_ledger_url(), seed=99, days=2, runs=1)
    after = refresh(s)
    assert after.certificates == 1540
    with engine(s.resolved_reporting_url()).connect() as conn:
        assert conn.execute(select(func.sum(IssuanceFact.certificates))).scalar_one() == 1540
    assert_reconciles(s)


def test_reporting_tables_hold_no_identity_data(ledger_sqlite) -> None:
    refresh(ledger_sqlite)
    for table in ReportingBase.metadata.tables.values():
        assert not IDENTITY_COLUMNS & set(table.columns.keys()), table.name


def test_threshold_setting_and_date_range(ledger_sqlite, monkeypatch) -> None:
    monkeypatch.setenv("BEVIS_SMALL_COUNT_THRESHOLD", "20")
    s = get_settings()
    refresh(s)
    lo, hi = date(2026, 11, 2), date(2026, 11, 4)
    pub = publish(lo, hi, s)
    truth = ledger_truth(s.resolved_ledger_url())
    in_range = {
        k: v for k, v in truth["by_day_channel"].items() if lo.isoformat() <= k[0] <= hi.isoformat()
    }
    frame = pub.tables["certificates_by_day_channel"]
    assert set(frame["day"]) == {"All", "2026-11-02", "2026-11-03", "2026-11-04"}
    assert pub.figures["certificates"] == sum(in_range.values())
    for name, table in pub.tables.items():
        value = next(
            (c for c in ("certificates", "entries", "attempts", "new_persons") if c in table), None
        )
        if value is None:
            continue
        published = table[value].dropna().astype(int)
        assert ((published == 0) | (published >= 20)).all(), name


def export_audit(data: Path, names: list[str], threshold: int) -> int:
    """Rebuild the linked certificate tables from the exported CSV files and check, with an
    LP, that no withheld cell can be worked out from what the files publish."""
    counts: dict = {}
    status: dict = {}
    tables = []
    for name in names:
        with open(data / f"{name}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        dims = [c for c in rows[0] if c not in ("certificates", "suppressed")]
        tables.append(dims)
        for r in rows:
            key = tuple(sorted((d, r[d]) for d in dims if r[d] != "All"))
            published = r["certificates"]
            if published:
                assert int(published) == 0 or int(published) >= threshold, (name, key)
            prev = status.get(key)
            status[key] = r["suppressed"]
            assert prev is None or prev == r["suppressed"], f"shared cell {key} differs"
            counts[key] = int(published) if published else None
    # relations: every margin = sum of its row/column
    relations = []
    keys = list(counts)
    for dims in tables:
        interior = [k for k in keys if {d for d, _ in k} == set(dims)]
        for d in dims:
            for level in {dict(k)[d] for k in interior}:
                parts = tuple(k for k in interior if dict(k)[d] == level)
                other = [x for x in dims if x != d]
                if other:
                    relations.append(Relation(((d, level),), parts))
            margins = tuple(k for k in keys if len(k) == 1 and k[0][0] == d)
            relations.append(Relation((), margins))
    # withheld values are unknown to the reader; the LP treats them as variables (the 0
    # placeholders never enter its constraints)
    truth = {k: (v if v is not None else 0) for k, v in counts.items()}
    result = Suppressed(truth, status, relations, threshold)
    ranges = lp_ranges(result)
    for k, (lo, hi) in ranges.items():
        assert hi - lo > 0.5, f"withheld cell {k} is derivable from the exports: [{lo}, {hi}]"
    return len(ranges)


def test_exports_publish_nothing_small_or_derivable(ledger_sqlite, tmp_path) -> None:
    html = build_report(tmp_path / "out", settings=ledger_sqlite)
    data = html.parent / "data"
    names = [
        "certificates_by_day_channel",
        "certificates_by_county_age_band",
        "certificates_by_product_dose",
        "certificates_by_type_channel",
        "certificates_by_operator_channel",
        "certificates_by_run",
    ]
    for n in names:
        assert (data / f"{n}.parquet").stat().st_size > 0
    assert export_audit(data, names, ledger_sqlite.small_count_threshold) > 0
    text = html.read_text() + "".join(p.read_text() for p in data.glob("*.csv"))
    assert "pid-s3" not in text and "o-s3-" not in text and "URN:UVCI" not in text


def test_issued_at_day_is_utc(bevis_env) -> None:
    s = get_settings()
    url = s.resolved_ledger_url()
    synthetic_ledger(10, url, seed=5, days=1, start=date(2026, 3, 1), runs=1)
    late = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    with Session(engine(url)) as sess:
        for c in sess.scalars(select(Certificate)):
            c.issued_at = late + timedelta(minutes=1)
        sess.commit()
    refresh(s)
    with Session(engine(url)) as sess:
        days = {f.day for f in sess.scalars(select(IssuanceFact))}
    assert days == {date(2026, 3, 1)}
