"""Drills: claims per person (issue 14, item 8) and the duplicate left behind (item 1, third
point), on real SQLite and real PostgreSQL.

Item 8: two concurrent runs could each claim one of a person's two orders, so the person got
two certificates. Item 1: a later duplicate order with valid consent stayed DUPLICATE for
ever when the first order was released because its consent lapsed.
"""

from __future__ import annotations

import datetime as dt
import threading

import pyarrow.parquet as pq
from sqlalchemy import select

from jobs.db import engine
from jobs.sources.models import CLAIMED, DUPLICATE, PENDING, Order
from jobs.sources.orders import claim
from tests.jobs.sources.support import add_orders, set_withdrawn

UTC = dt.UTC
NOW = dt.datetime.now(UTC)
H = dt.timedelta(hours=1)
PERSONS = 200


def _two_orders_each(url: str) -> None:
    """PERSONS people with two pending, consenting orders each; the second 30 hours after
    the first, so that in request order the persons' orders interleave."""
    rows = []
    for i in range(PERSONS):
        pnr = f"19700101{i:04d}"
        first = NOW - 400 * H + i * H
        for k, at in enumerate((first, first + 30 * H)):
            rows.append(
                {
                    "order_id": f"P{i:04d}-{k}",
                    "person_id": pnr,
                    "requested_at": at,
                    "consent_at": at + dt.timedelta(minutes=1),
                }
            )
    add_orders(url, rows)


def _claims_by_person(url: str) -> dict[str, list[tuple[str, str]]]:
    with engine(url).connect() as conn:
        rows = conn.execute(
            select(Order.person_id, Order.claimed_by_run, Order.state).where(
                Order.state.in_((CLAIMED, DUPLICATE))
            )
        ).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for person, run, state in rows:
        out.setdefault(person, []).append((run, state))
    return out


def _split_persons(url: str) -> tuple[int, int]:
    """(persons whose orders went to more than one run, persons with more than one CLAIMED
    order — i.e. two certificates)."""
    by_person = _claims_by_person(url)
    split = sum(1 for v in by_person.values() if len({run for run, _ in v}) > 1)
    twice = sum(1 for v in by_person.values() if sum(st == CLAIMED for _, st in v) > 1)
    return split, twice


def test_two_concurrent_claims_never_split_a_person(source_url: str) -> None:
    _two_orders_each(source_url)
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def work(run: str) -> None:
        try:
            barrier.wait()
            results[run] = claim(run, dt.datetime.now(UTC), limit=150, url=source_url)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in ("run-a", "run-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    claim("run-c", dt.datetime.now(UTC), url=source_url)  # and a third run takes the rest
    split, twice = _split_persons(source_url)
    assert (split, twice) == (0, 0), (
        f"{split} of {PERSONS} persons had orders claimed by two runs; "
        f"{twice} would get two certificates"
    )
    # every person answered exactly once, the second order as DUPLICATE of the first
    by_person = _claims_by_person(source_url)
    assert len(by_person) == PERSONS
    assert all(sorted(st for _, st in v) == [CLAIMED, DUPLICATE] for v in by_person.values())
    # the limit still bounds the orders each run extracts
    assert all(results[r][0] <= 150 for r in ("run-a", "run-b")), results


def test_a_later_duplicate_takes_the_place_of_a_lapsed_first_order(source_url: str) -> None:
    """A person ordered twice; the run claimed both (first CLAIMED, second DUPLICATE) and
    then stopped; the first order's consent is withdrawn before the extract resumes. The
    second, valid, order is extracted in its place — not left DUPLICATE for ever."""
    from jobs.settings import Settings
    from jobs.steps.extract import extract

    add_orders(
        source_url,
        [
            {"order_id": "D-0001", "person_id": "198001010001", "requested_at": NOW - 50 * H,
             "consent_at": NOW - 49 * H},
            {"order_id": "D-0002", "person_id": "198001010001", "requested_at": NOW - 20 * H,
             "consent_at": NOW - 19 * H},
            {"order_id": "D-0003", "person_id": "198001010003", "requested_at": NOW - 50 * H,
             "consent_at": NOW - 49 * H},
        ],
        persons=True,
    )  # fmt: skip
    assert claim("run-d", dt.datetime.now(UTC), url=source_url) == (2, 1)
    set_withdrawn(source_url, ["D-0001"], NOW - H)
    import os

    s = Settings(data_dir=os.environ["BEVIS_DATA_DIR"], source_url=source_url)
    r = extract("run-d", settings=s)
    got = set(pq.read_table(r.path, columns=["order_id"])["order_id"].to_pylist())
    with engine(source_url).connect() as conn:
        states = dict(conn.execute(select(Order.order_id, Order.state)).all())
    assert got == {"D-0002", "D-0003"}, (got, states)
    assert states == {"D-0001": PENDING, "D-0002": CLAIMED, "D-0003": CLAIMED}


def test_an_operator_release_takes_the_duplicates_along(source_url: str) -> None:
    """`bevis orders release --run X --order <first>`: the first order's duplicate is not
    left DUPLICATE of a run that no longer holds its first order."""
    from jobs.sources.orders import release

    add_orders(
        source_url,
        [
            {"order_id": "E-0001", "person_id": "198001010001", "requested_at": NOW - 50 * H,
             "consent_at": NOW - 49 * H},
            {"order_id": "E-0002", "person_id": "198001010001", "requested_at": NOW - 20 * H,
             "consent_at": NOW - 19 * H},
        ],
    )  # fmt: skip
    assert claim("run-e", dt.datetime.now(UTC), url=source_url) == (1, 1)
    assert release("run-e", ["E-0001"], url=source_url) == 2
    with engine(source_url).connect() as conn:
        states = dict(conn.execute(select(Order.order_id, Order.state)).all())
    assert states == {"E-0001": PENDING, "E-0002": PENDING}
    assert claim("run-f", dt.datetime.now(UTC), url=source_url) == (1, 1)
