"""Drill: instants on SQLite (issue 14, item 1, second point).

The consent rule compares instants. SQLite has no timestamp type: it compares text, so a
``T`` separator, an integer epoch, a withdrawal without microseconds or an ISO ``Z``
re-consent each gave a wrong answer, and a ``+02:00`` offset aborted the whole extract.
Here a register written before the fix (at revision sources_0002, by "another system")
holds exactly those values; the upgrade converts them to the one stored form and the
extract then answers each order as the rule says. A malformed value written after the
upgrade holds back that one order (quarantine ``invalid_consent_time``), not the run.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from jobs.db import engine
from jobs.settings import Settings

UTC = dt.UTC
NOW = dt.datetime.now(UTC).replace(microsecond=0)
H = dt.timedelta(hours=1)


def _stored(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _iso_t(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _iso_z(t: dt.datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# order id: (consent_at, consent_withdrawn_at, may be extracted?) as another system wrote them
LEGACY = {
    # consent with a 'T' (08:00 yesterday), withdrawn an hour later: 'T' > ' ' made the
    # withdrawal look earlier than the consent — the withdrawn order was issued
    "ORD-T-WITHDRAWN": (_iso_t(NOW - 24 * H), _stored(NOW - 23 * H), False),
    # withdrawal as an integer epoch: in SQLite every INTEGER sorts before every TEXT
    "ORD-EPOCH-WITHDRAWN": (_stored(NOW - 48 * H), int((NOW - 24 * H).timestamp()), False),
    # withdrawal at the consent's very instant, written without microseconds: the shorter
    # text sorts first, so "withdrawn before consent" — issued
    "ORD-NOMICRO-WITHDRAWN": (_stored(NOW - 48 * H), (NOW - 48 * H).strftime("%Y-%m-%d %H:%M:%S"), False),
    # a re-consent ten minutes ago written with 'T...Z': compared with :now as text it
    # looked like a consent in the future — a valid re-consent excluded
    "ORD-Z-RECONSENT": (_iso_z(NOW - dt.timedelta(minutes=10)), _stored(NOW - 24 * H), True),
    # plain, in the stored form: the control
    "ORD-PLAIN": (_stored(NOW - 48 * H), None, True),
}  # fmt: skip
OFFSET = {
    # a consent with an offset: the extract could not read it and stopped (CorruptRow)
    "ORD-OFFSET": ((NOW - 30 * H).astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(), None, True),
    "ORD-PLAIN": (_stored(NOW - 48 * H), None, True),
}  # fmt: skip


def _register_at_0002(url: str, orders: dict) -> None:
    """A register as it stood before sources_0003, its instants as another system wrote
    them (raw SQL: no helper of ours in the way)."""
    from alembic import command

    from jobs.db import alembic_config

    cfg = alembic_config("sources", url)
    with engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "sources_0002")
    with engine(url).begin() as conn:
        for i, (order_id, (consent, withdrawn, _)) in enumerate(orders.items()):
            pnr = f"19800101{i:04d}"
            conn.execute(
                text(
                    "INSERT INTO population (person_id, given_name, family_name, dob,"
                    " protected_identity) VALUES (:p, 'ANNA', 'TESTSSON', '1980-01-01', 0)"
                ),
                {"p": pnr},
            )
            conn.execute(
                text(
                    "INSERT INTO nvr_vaccinations (person_id, vaccination_date, vaccine,"
                    " dose_number, reporting_system, reporting_ref, reported_at)"
                    " VALUES (:p, '2021-05-01', 'Comirnaty', 1, 'SYS', :ref, :rep)"
                ),
                {"p": pnr, "ref": order_id, "rep": _stored(NOW - 4000 * H)},
            )
            conn.execute(
                text(
                    "INSERT INTO orders (order_id, person_id, requested_at, consent_at,"
                    " consent_withdrawn_at, cert_type, state)"
                    " VALUES (:o, :p, :req, :c, :w, 'v', 'PENDING')"
                ),
                {"o": order_id, "p": pnr, "req": _stored(NOW - 72 * H), "c": consent, "w": withdrawn},
            )  # fmt: skip
        conn.execute(
            text("INSERT INTO nvr_snapshots (taken_at, persons, events) VALUES (:t, 1, 1)"),
            {"t": _stored(NOW - H)},
        )


def _extracted(s: Settings, run_id: str) -> set[str]:
    from jobs.db import migrate
    from jobs.steps.extract import extract

    migrate("sources", s.resolved_source_url())  # the upgrade, as `bevis db migrate` does it
    r = extract(run_id, settings=s)
    return set(pq.read_table(r.path, columns=["order_id"])["order_id"].to_pylist())


def test_legacy_instants_are_answered_by_the_rule(bevis_env: Path) -> None:
    s = Settings(data_dir=bevis_env)
    _register_at_0002(s.resolved_source_url(), LEGACY)
    got = _extracted(s, "run-inst")
    want = {o for o, (_, _, ok) in LEGACY.items() if ok}
    wrongly_issued = sorted(got - want)
    wrongly_excluded = sorted(want - got)
    assert not wrongly_issued and not wrongly_excluded, (
        f"{len(wrongly_issued)} withdrawn orders extracted {wrongly_issued}, "
        f"{len(wrongly_excluded)} valid consents excluded {wrongly_excluded}"
    )


def test_an_offset_does_not_stop_the_extract(bevis_env: Path) -> None:
    s = Settings(data_dir=bevis_env)
    _register_at_0002(s.resolved_source_url(), OFFSET)
    assert _extracted(s, "run-off") == {"ORD-OFFSET", "ORD-PLAIN"}


def test_the_upgrade_stores_one_form(bevis_env: Path) -> None:
    """After sources_0003 every instant of the register is stored-form text."""
    from jobs.db import migrate
    from jobs.sources.consent import is_storage_form

    s = Settings(data_dir=bevis_env)
    url = s.resolved_source_url()
    _register_at_0002(url, {**LEGACY, **OFFSET})
    migrate("sources", url)
    with engine(url).connect() as conn:
        rows = conn.execute(
            text(
                "SELECT order_id, requested_at, consent_at, consent_withdrawn_at FROM orders"
                " UNION ALL SELECT 'nvr', reported_at, NULL, NULL FROM nvr_vaccinations"
                " UNION ALL SELECT 'snapshot', taken_at, NULL, NULL FROM nvr_snapshots"
            )
        ).all()
    bad = [(r[0], v) for r in rows for v in r[1:] if v is not None and not is_storage_form(v)]
    assert not bad
    # the offset one: 30 h ago, whatever zone it was written in
    with engine(url).connect() as conn:
        c = conn.execute(
            text("SELECT consent_at FROM orders WHERE order_id = 'ORD-OFFSET'")
        ).scalar()
    assert c == _stored(NOW - 30 * H)


@pytest.mark.parametrize(
    "bad",
    [
        "2026-10-01T10:00:00+02:00",
        "2026-10-01 10:00:00",
        "1790000000",
        1790000000,
        "2026-02-31 10:00:00.000000",
        "not a time",
    ],
)
def test_a_malformed_instant_after_the_upgrade_holds_back_one_order(bevis_env: Path, bad) -> None:
    """Another system writes a malformed withdrawal after the upgrade: that order is
    quarantined (invalid_consent_time) and not extracted; the others are."""
    from jobs.ledger.quarantine import read

    s = Settings(data_dir=bevis_env)
    url = s.resolved_source_url()
    _register_at_0002(url, OFFSET)
    from jobs.db import migrate

    migrate("sources", url)
    with engine(url).begin() as conn:
        conn.execute(
            text("UPDATE orders SET consent_withdrawn_at = :w WHERE order_id = 'ORD-OFFSET'"),
            {"w": bad},
        )
    assert _extracted(s, "run-bad") == {"ORD-PLAIN"}
    q = read("run-bad", s).to_pylist()
    assert [(e["order_id"], e["reason_code"], e["step"]) for e in q] == [
        ("ORD-OFFSET", "invalid_consent_time", "extract")
    ]
    assert "consent_withdrawn_at" in q[0]["detail"] and str(bad) not in q[0]["detail"]
    assert q[0]["pid"] and "19800101" not in str(q[0])


def test_the_seeder_writes_one_form_and_refuses_naive_instants(bevis_env: Path) -> None:
    """`bevis seed` stores every instant in the one form; a naive (zone-less) timestamp
    column is refused before anything is written."""
    import pyarrow as pa

    from jobs.devtools.seed import _Loader, seed
    from jobs.errors import InvalidInstant
    from jobs.sources.consent import is_storage_form

    s = Settings(data_dir=bevis_env)
    url = s.resolved_source_url()
    seed(150, seed=3, settings=s)
    with engine(url).connect() as conn:
        values = [
            v
            for row in conn.execute(
                text(
                    "SELECT requested_at, consent_at, consent_withdrawn_at, claimed_at,"
                    " fulfilled_at FROM orders"
                )
            )
            for v in row
            if v is not None
        ]
        before = conn.execute(text("SELECT count(*) FROM orders")).scalar()
    assert values and all(is_storage_form(v) for v in values)
    naive = pa.table(
        {
            "order_id": ["N-1"],
            "person_id": ["198001010000"],
            "requested_at": pa.array([1_790_000_000_000_000], pa.timestamp("us")),
            "cert_type": ["v"],
            "state": ["PENDING"],
        }
    )
    loader = _Loader(url)
    try:
        with pytest.raises(InvalidInstant, match=r"orders\.requested_at"):
            loader.load("orders", naive)
        with pytest.raises(InvalidInstant, match=r"orders\.consent_at"):
            epoch = naive.set_column(
                2, "requested_at", naive["requested_at"].cast(pa.timestamp("us", "UTC"))
            ).append_column("consent_at", pa.array([1_790_000_000]))
            loader.load("orders", epoch)
    finally:
        loader.close()
    with engine(url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar() == before


def test_the_orm_stores_an_offset_instant_as_utc(bevis_env: Path) -> None:
    """Plain DateTime on SQLite stored an aware datetime's wall-clock time (10:30+02:00 as
    10:30); the sources' Instant type stores the instant (08:30 UTC), and refuses naive."""
    from sqlalchemy.exc import StatementError
    from sqlalchemy.orm import Session

    from jobs.db import migrate
    from jobs.sources.models import Order

    url = Settings(data_dir=bevis_env).resolved_source_url()
    migrate("sources", url)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    with Session(engine(url)) as session:
        session.add(
            Order(
                order_id="O-1",
                person_id="198001010000",
                requested_at=dt.datetime(2026, 10, 1, 10, 30, tzinfo=plus2),
                consent_at=dt.datetime(2026, 10, 1, 8, 31, tzinfo=UTC),
            )
        )
        session.commit()
        assert session.get(Order, "O-1").requested_at == dt.datetime(2026, 10, 1, 8, 30, tzinfo=UTC)
        session.add(Order(order_id="O-2", person_id="1", requested_at=dt.datetime(2026, 10, 1)))
        with pytest.raises(StatementError, match="no UTC offset"):
            session.commit()
    with engine(url).connect() as conn:
        assert conn.execute(text("SELECT requested_at FROM orders")).scalar() == (
            "2026-10-01 08:30:00.000000"
        )
