"""Certificate orders: claim for a run, release, fulfil — the only writes bevis makes to the
sources database.

A run claims the orders it will answer, so that two extracts running at once, or a repeated
one, never take the same order twice:

* PostgreSQL: ``UPDATE ... WHERE order_id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` — a
  concurrent claimer skips rows another transaction holds instead of waiting for them.
* SQLite: one ``UPDATE ... WHERE state = 'PENDING'`` inside ``BEGIN IMMEDIATE``, which takes
  the database's single write lock first, so claims are serialised.

Consent is checked in the claim query itself: consent given (not in the future), and not
withdrawn — a withdrawal counts unless consent was given again after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from jobs.settings import Settings, get_settings
from jobs.sources.models import CLAIMED, DUPLICATE, FULFILLED, PENDING

# The consent rule, as SQL over the orders table aliased ``o`` (used by claim and extract).
VALID_CONSENT = (
    "o.consent_at IS NOT NULL AND o.consent_at <= :now"
    " AND (o.consent_withdrawn_at IS NULL OR o.consent_withdrawn_at < o.consent_at)"
)

_DUPLICATES = f"""
UPDATE orders SET state = '{DUPLICATE}'
WHERE claimed_by_run = :run AND state = '{CLAIMED}' AND EXISTS (
  SELECT 1 FROM orders o2
  WHERE o2.claimed_by_run = :run AND o2.state IN ('{CLAIMED}', '{DUPLICATE}')
    AND o2.person_id = orders.person_id AND o2.cert_type = orders.cert_type
    AND (o2.requested_at < orders.requested_at
         OR (o2.requested_at = orders.requested_at AND o2.order_id < orders.order_id)))
"""


def sqlite_ts(t: dt.datetime) -> str:
    """A UTC timestamp in SQLAlchemy's SQLite storage format (so that strings compare)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _claim_sql(limit: int | None, postgres: bool) -> str:
    lim = f" LIMIT {int(limit)}" if limit is not None else ""
    lock = " FOR UPDATE SKIP LOCKED" if postgres else ""
    return f"""
UPDATE orders SET state = '{CLAIMED}', claimed_by_run = :run, claimed_at = :now
WHERE order_id IN (
  SELECT o.order_id FROM orders o
  WHERE o.state = '{PENDING}' AND {VALID_CONSENT}
  ORDER BY o.requested_at, o.order_id{lim}{lock})
"""


def _url(settings: Settings | None, url: str | None) -> str:
    return url or (settings or get_settings()).resolved_source_url()


def claim(
    run_id: str,
    now: dt.datetime,
    limit: int | None = None,
    url: str | None = None,
    settings: Settings | None = None,
) -> tuple[int, int]:
    """Claim pending orders with valid consent for ``run_id`` (oldest first, at most
    ``limit``). A later order of the same person and certificate type claimed in the same
    run becomes DUPLICATE. Returns (orders claimed for extraction, duplicates)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from jobs.db import engine

    url = _url(settings, url)
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        import sqlite3

        con = sqlite3.connect(u.database, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("BEGIN IMMEDIATE")
            try:
                params = {"run": run_id, "now": sqlite_ts(now)}
                claimed = con.execute(_claim_sql(limit, False), params).rowcount
                dups = con.execute(_DUPLICATES, {"run": run_id}).rowcount
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
        return claimed - dups, dups
    with engine(url).begin() as conn:
        claimed = conn.execute(text(_claim_sql(limit, True)), {"run": run_id, "now": now}).rowcount
        dups = conn.execute(text(_DUPLICATES), {"run": run_id}).rowcount
    return claimed - dups, dups


def _chunks(ids: list[str], size: int = 5000) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def release(
    run_id: str,
    order_ids: Iterable[str] | None = None,
    settings: Settings | None = None,
    url: str | None = None,
) -> int:
    """Give the orders a (failed) run claimed back to PENDING, so a later run can take them.
    Fulfilled orders are never released. Returns the number of orders released."""
    from sqlalchemy import update

    from jobs.db import engine
    from jobs.sources.models import Order

    base = (
        update(Order)
        .where(Order.claimed_by_run == run_id, Order.state.in_((CLAIMED, DUPLICATE)))
        .values(state=PENDING, claimed_by_run=None, claimed_at=None)
    )
    total = 0
    with engine(_url(settings, url)).begin() as conn:
        if order_ids is None:
            return conn.execute(base).rowcount
        for chunk in _chunks(list(order_ids)):
            total += conn.execute(base.where(Order.order_id.in_(chunk))).rowcount
    return total


def fulfil(
    run_id: str,
    order_ids: Iterable[str],
    settings: Settings | None = None,
    url: str | None = None,
) -> int:
    """Mark orders of ``run_id`` as answered (a certificate was issued). Idempotent: orders
    already fulfilled, or not claimed by this run, are left alone. Returns the number
    changed."""
    from sqlalchemy import update

    from jobs.db import engine
    from jobs.sources.models import Order

    now = dt.datetime.now(dt.UTC)
    base = (
        update(Order)
        .where(Order.claimed_by_run == run_id, Order.state == CLAIMED)
        .values(state=FULFILLED, fulfilled_at=now)
    )
    total = 0
    with engine(_url(settings, url)).begin() as conn:
        for chunk in _chunks(list(order_ids)):
            total += conn.execute(base.where(Order.order_id.in_(chunk))).rowcount
    return total


def states(
    run_id: str | None = None, settings: Settings | None = None, url: str | None = None
) -> dict[str, int]:
    """Number of orders per state (of one run, or of all orders)."""
    from sqlalchemy import func, select

    from jobs.db import engine
    from jobs.sources.models import Order

    q = select(Order.state, func.count()).group_by(Order.state)
    if run_id is not None:
        q = q.where(Order.claimed_by_run == run_id)
    with engine(_url(settings, url)).connect() as conn:
        return {state: int(n) for state, n in conn.execute(q)}
