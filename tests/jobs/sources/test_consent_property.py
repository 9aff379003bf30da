"""Property: the consent rule in SQL (jobs.sources.consent.valid_sql / malformed_sql) gives
the answer of the same rule in Python, on real SQLite and real PostgreSQL, for instants a
microsecond apart, equal, in the future, in other zones — and, on SQLite, written in every
form another system might use (each of which must be recognised as malformed, not judged).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from jobs.db import engine
from jobs.sources.consent import (
    from_storage,
    is_storage_form,
    malformed_sql,
    now_param,
    to_storage,
    valid_consent,
    valid_sql,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, 0, 0, 250_000, tzinfo=UTC)
ZONES = [UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]

# instants near NOW and near each other: equality and one-microsecond steps matter
offsets = st.one_of(
    st.integers(-3, 3),  # microseconds around NOW
    st.integers(-3, 3).map(lambda k: k * 1_000_000),  # seconds
    st.integers(-48, 48).map(lambda k: k * 3_600_000_000),  # hours
    st.integers(-(10**13), 10**13),  # anywhere within ~4 months
)
instants = offsets.map(lambda us: NOW + dt.timedelta(microseconds=us))


def _forms(t: dt.datetime) -> st.SearchStrategy:
    """The ways a value for instant ``t`` turns up in an SQLite register."""
    u = t.astimezone(UTC)
    return st.sampled_from(
        [
            to_storage(u),  # the one stored form
            to_storage(u),
            to_storage(u),
            u.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            u.strftime("%Y-%m-%d %H:%M:%S"),
            u.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            u.strftime("%Y-%m-%dT%H:%M:%SZ"),
            t.astimezone(ZONES[1]).isoformat(),
            int(u.timestamp()),
            u.timestamp(),
        ]
    )


TRICKY = [
    "2026-02-29 10:00:00.000000",  # no such day (2026 is no leap year)
    "2024-02-29 10:00:00.000000",  # a real leap day
    "2026-13-01 10:00:00.000000",
    "2026-01-01 24:00:00.000000",
    "2026-01-01 23:59:60.000000",
    "0000-01-01 00:00:00.000000",
    "9999-12-31 23:59:59.999999",
    " 2026-11-20 12:00:00.000000",
    "2026-11-20 12:00:00.0000000",
    "",
    "now",
]
sqlite_value = st.one_of(
    st.none(),
    instants.flatmap(_forms),
    st.sampled_from(TRICKY),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
)
pg_value = st.one_of(
    st.none(), st.tuples(instants, st.sampled_from(ZONES)).map(lambda x: x[0].astimezone(x[1]))
)


def _python(consent, withdrawn, dialect: str) -> tuple[bool, bool]:
    """(valid, malformed) by the Python rule."""
    if dialect == "sqlite":
        bad = any(v is not None and not is_storage_form(v) for v in (consent, withdrawn))
        if bad:
            return False, True
        c = from_storage(consent) if consent is not None else None
        w = from_storage(withdrawn) if withdrawn is not None else None
        return valid_consent(c, w, NOW), False
    return valid_consent(consent, withdrawn, NOW), False


def _sql(url: str, rows: list[tuple]) -> list[tuple[bool, bool]]:
    eng = engine(url)
    dialect = eng.dialect.name
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM orders"))
        for i, (c, w) in enumerate(rows):
            conn.execute(
                text(
                    "INSERT INTO orders (order_id, person_id, requested_at, consent_at,"
                    " consent_withdrawn_at, cert_type, state)"
                    " VALUES (:o, '198001010000', :req, :c, :w, 'v', 'PENDING')"
                ),
                {"o": f"H{i:04d}", "req": now_param(NOW - dt.timedelta(days=3), dialect), "c": c, "w": w},
            )  # fmt: skip
        got = conn.execute(
            text(
                f"SELECT o.order_id, CASE WHEN {valid_sql('o', dialect)} THEN 1 ELSE 0 END,"
                f" CASE WHEN {malformed_sql('o', dialect)} THEN 1 ELSE 0 END"
                " FROM orders o ORDER BY o.order_id"
            ),
            {"now": now_param(NOW, dialect)},
        ).all()
    return [(bool(v), bool(m)) for _, v, m in got]


def _check(url: str, dialect: str, rows: list[tuple]) -> None:
    got = _sql(url, rows)
    want = [_python(c, w, dialect) for c, w in rows]
    for (c, w), g, e in zip(rows, got, want, strict=True):
        assert g == e, f"consent {c!r}, withdrawn {w!r}: SQL says {g}, Python says {e}"


@pytest.fixture
def sqlite_url(bevis_env) -> str:
    from jobs.db import migrate

    url = f"sqlite:///{bevis_env / 'nvr.db'}"
    migrate("sources", url)
    return url


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(sqlite_value, sqlite_value), min_size=1, max_size=12))
def test_sql_rule_is_the_python_rule_on_sqlite(sqlite_url: str, rows) -> None:
    _check(sqlite_url, "sqlite", rows)


@pytest.fixture
def postgres_url(pg_url: str) -> str:
    from jobs.db import migrate

    migrate("sources", pg_url)
    return pg_url


@pytest.mark.postgres
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.tuples(pg_value, pg_value), min_size=1, max_size=12))
def test_sql_rule_is_the_python_rule_on_postgres(postgres_url: str, rows) -> None:
    _check(postgres_url, "postgresql", rows)
