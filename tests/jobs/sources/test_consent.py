"""The consent re-check (jobs/sources/consent.py) and the release of withdrawn orders
(jobs/sources/orders.py), against real SQLite and real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, text

from jobs.db import engine
from jobs.errors import InvalidInstant
from jobs.sources.consent import (
    instant,
    is_storage_form,
    lapsed,
    set_consent,
    to_storage,
    valid_consent,
)
from jobs.sources.models import CLAIMED, DUPLICATE, FULFILLED, PENDING, Order
from jobs.sources.orders import release_withdrawn

UTC = dt.UTC
H = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)


def add_orders(url: str, rows: list[dict]) -> None:
    """Insert orders through the write helper (instants in the one stored form)."""
    with engine(url).begin() as conn:
        for r in rows:
            conn.execute(
                text(
                    "INSERT INTO orders (order_id, person_id, requested_at, cert_type, state,"
                    " claimed_by_run) VALUES (:o, :p, :req, :t, :st, :run)"
                ),
                {
                    "o": r["order_id"],
                    "p": r.get("person_id", "19800101" + r["order_id"][-4:].rjust(4, "0")),
                    "req": _stored(url, r.get("requested_at", NOW - 72 * H)),
                    "t": r.get("cert_type", "v"),
                    "st": r.get("state", PENDING),
                    "run": r.get("claimed_by_run"),
                },
            )
    for r in rows:
        set_consent(
            r["order_id"],
            consent_at=r.get("consent_at"),
            consent_withdrawn_at=r.get("consent_withdrawn_at"),
            url=url,
        )


def _stored(url: str, t: dt.datetime):
    return to_storage(t) if url.startswith("sqlite") else t


NOW = dt.datetime.now(UTC).replace(microsecond=500_000)
CASES = {
    # name: (consent_at, consent_withdrawn_at, lapsed?)
    "valid": (NOW - 2 * H, None, False),
    "withdrawn": (NOW - 48 * H, NOW - 24 * H, True),
    "withdrawn_same_instant": (NOW - 48 * H, NOW - 48 * H, True),
    "withdrawn_1us_after": (NOW - 48 * H, NOW - 48 * H + US, True),
    "reconsented": (NOW - 2 * H, NOW - 24 * H, False),
    "reconsented_1us_after": (NOW - 48 * H + US, NOW - 48 * H, False),
    "no_consent": (None, None, True),
    "consent_in_future": (NOW + 24 * H, None, True),
    "withdrawal_dated_in_future": (NOW - 48 * H, NOW + H, True),
    # the same instants, given in another zone: one instant, one answer
    "withdrawn_given_in_plus2": (
        (NOW - 48 * H).astimezone(dt.timezone(dt.timedelta(hours=2))),
        (NOW - 47 * H).astimezone(dt.timezone(dt.timedelta(hours=2))),
        True,
    ),
    # 10:30+02:00 is 08:30 UTC: BEFORE the 09:00 UTC consent, so consent holds
    "offset_withdrawal_before_consent": (
        dt.datetime(2026, 10, 1, 9, 0, tzinfo=UTC),
        dt.datetime(2026, 10, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        False,
    ),
}


def test_lapsed_is_the_consent_rule(source_url: str) -> None:
    rows = [
        {"order_id": f"C-{i:04d}", "consent_at": c, "consent_withdrawn_at": w}
        for i, (c, w, _) in enumerate(CASES.values())
    ]
    add_orders(source_url, rows)
    names = {f"C-{i:04d}": name for i, name in enumerate(CASES)}
    got = {names[o] for o in lapsed([*names, "NOT-IN-REGISTER"], url=source_url) if o in names}
    expected = {name for name, (_, _, gone) in CASES.items() if gone}
    assert got == expected
    # the Python rule agrees case by case
    for name, (c, w, gone) in CASES.items():
        ci, wi = (instant(c) if c else None), (instant(w) if w else None)
        assert valid_consent(ci, wi, dt.datetime.now(UTC)) is not gone, name
    # an order that is not in the register has no consent
    assert lapsed(["NOT-IN-REGISTER"], url=source_url) == {"NOT-IN-REGISTER"}
    assert lapsed([], url=source_url) == set()


def test_lapsed_works_in_chunks(source_url: str) -> None:
    from jobs.sources import consent

    rows = [
        {
            "order_id": f"K-{i:04d}",
            "consent_at": NOW - 10 * H,
            "consent_withdrawn_at": (NOW - H) if i % 3 == 0 else None,
        }
        for i in range(25)
    ]
    add_orders(source_url, rows)
    old = consent.SQL_CHUNK
    consent.SQL_CHUNK = 4  # 25 ids in 7 chunks
    try:
        got = lapsed([r["order_id"] for r in rows], url=source_url)
    finally:
        consent.SQL_CHUNK = old
    assert got == {f"K-{i:04d}" for i in range(0, 25, 3)}


def test_a_malformed_instant_in_sqlite_is_not_consent(bevis_env) -> None:
    """A value another system wrote in another form cannot be judged: not held as consent."""
    from jobs.db import migrate

    url = f"sqlite:///{bevis_env / 'nvr.db'}"
    migrate("sources", url)
    add_orders(url, [{"order_id": "M-0001", "consent_at": NOW - 48 * H}])
    assert lapsed(["M-0001"], url=url) == set()
    for bad in (
        "2026-10-01T10:00:00+02:00",
        "2026-10-01 10:00:00",
        1790000000,
        "2026-02-31 10:00:00.000000",
    ):
        with engine(url).begin() as conn:
            conn.execute(
                text("UPDATE orders SET consent_withdrawn_at = :w WHERE order_id = 'M-0001'"),
                {"w": bad},
            )
        assert lapsed(["M-0001"], url=url) == {"M-0001"}, bad


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 10, 1, 10, 0),  # naive: which zone?
        "2026-10-01 10:00:00",  # naive text
        "2026-10-01T10:00:00",
        1790000000,  # epoch: seconds? milliseconds?
        1790000000.5,
        "yesterday",
        "",
    ],
)
def test_instant_refuses_what_it_cannot_place(value) -> None:
    with pytest.raises(InvalidInstant) as err:
        instant(value, "consent_withdrawn_at", "ORD1")
    assert "ORD1" in str(err.value) and "consent_withdrawn_at" in str(err.value)
    assert str(value) not in str(err.value) or value == ""


def test_instant_normalises_what_it_can() -> None:
    for value in (
        "2026-10-01T08:30:00Z",
        "2026-10-01T10:30:00+02:00",
        "2026-10-01 08:30:00.000000+00:00",
        dt.datetime(2026, 10, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ):
        assert to_storage(value) == "2026-10-01 08:30:00.000000", value
    assert is_storage_form("2026-10-01 08:30:00.000000")
    for bad in ("2026-10-01 08:30:00", "2026-10-01T08:30:00.000000", "2026-13-01 08:30:00.000000"):
        assert not is_storage_form(bad), bad


def test_set_consent_refuses_before_writing(source_url: str) -> None:
    add_orders(source_url, [{"order_id": "S-0001", "consent_at": NOW - H}])
    with pytest.raises(InvalidInstant):
        set_consent("S-0001", consent_withdrawn_at="2026-10-01 10:00:00", url=source_url)
    assert lapsed(["S-0001"], url=source_url) == set()  # nothing was written
    with pytest.raises(LookupError):
        set_consent("S-9999", consent_at=NOW, url=source_url)


def test_release_withdrawn_frees_the_waiting_duplicate(source_url: str) -> None:
    """The first order of a person lapses after the extract: it goes back to PENDING, and
    so does the person's later (valid) order that was DUPLICATE of it; another person's
    duplicates, whose first order stays, stay DUPLICATE."""
    p1, p2 = "198001010001", "198001010002"
    add_orders(
        source_url,
        [
            {"order_id": "R-0001", "person_id": p1, "state": CLAIMED, "claimed_by_run": "run-r",
             "consent_at": NOW - 48 * H, "requested_at": NOW - 50 * H},
            {"order_id": "R-0002", "person_id": p1, "state": DUPLICATE, "claimed_by_run": "run-r",
             "consent_at": NOW - 40 * H, "requested_at": NOW - 41 * H},
            {"order_id": "R-0003", "person_id": p2, "state": CLAIMED, "claimed_by_run": "run-r",
             "consent_at": NOW - 48 * H, "requested_at": NOW - 50 * H},
            {"order_id": "R-0004", "person_id": p2, "state": DUPLICATE, "claimed_by_run": "run-r",
             "consent_at": NOW - 40 * H, "requested_at": NOW - 41 * H},
            {"order_id": "R-0005", "person_id": "198001010005", "state": FULFILLED,
             "claimed_by_run": "run-old", "consent_at": NOW - 400 * H},
        ],
    )  # fmt: skip
    assert release_withdrawn("run-r", ["R-0001", "R-0005"], url=source_url) == 2
    with engine(source_url).connect() as conn:
        got = dict(conn.execute(select(Order.order_id, Order.state)).all())
        r1 = conn.execute(select(Order).where(Order.order_id == "R-0001")).one()
    assert got == {
        "R-0001": PENDING,
        "R-0002": PENDING,  # claimable again by the next run
        "R-0003": CLAIMED,
        "R-0004": DUPLICATE,
        "R-0005": FULFILLED,  # another run's: left alone
    }
    assert (r1.claimed_by_run, r1.claimed_at) == (None, None)
    assert release_withdrawn("run-r", ["R-0001"], url=source_url) == 0  # idempotent
