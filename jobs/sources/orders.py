"""Certificate orders: claim for a run, release, fulfil — the only writes bevis makes to the
sources database.

A run claims the orders it will answer, per PERSON, so that two extracts running at once, or
a repeated one, never take the same order twice, nor one each of a person's two orders:

* claims are serialised: SQLite's ``BEGIN IMMEDIATE`` takes the database's single write
  lock first; PostgreSQL's claim takes a transaction advisory lock first (a claim is one
  short transaction, so a second claimer waits for it, then sees what it took);
* a claim takes the oldest pending orders with valid consent (at most ``limit``), then the
  other pending, consenting orders of the same persons and certificate types even past the
  limit, so a person's orders never straddle two runs; of a person's orders in one run the
  first is CLAIMED and the later ones DUPLICATE (answered by the first);
* a DUPLICATE whose first order is given back (released, or its consent lapsed) is not left
  DUPLICATE: the extract promotes it in place of the first, later steps release it to
  PENDING (:func:`release_orphaned_duplicates`).

Consent is checked in the claim query itself (:mod:`jobs.sources.consent`, the one rule).
An order with a malformed instant is claimed too — to be quarantined by the extract, not
judged, and not skipped silently.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from jobs.settings import Settings, get_settings
from jobs.sources.consent import malformed_sql, now_param, valid_sql
from jobs.sources.models import CLAIMED, DUPLICATE, FULFILLED, PENDING

# Any constant: the key of the advisory lock that serialises claims on PostgreSQL.
CLAIM_LOCK_KEY = 0x62657669  # "bevi"


def _duplicates_sql(dialect: str) -> str:
    """A later order of the same person and type claimed in the same run becomes DUPLICATE
    of the first (malformed orders are neither first nor duplicate: they are quarantined)."""
    return f"""
UPDATE orders SET state = '{DUPLICATE}'
WHERE claimed_by_run = :run AND state = '{CLAIMED}' AND NOT {malformed_sql("orders", dialect)}
  AND EXISTS (
  SELECT 1 FROM orders o2
  WHERE o2.claimed_by_run = :run AND o2.state IN ('{CLAIMED}', '{DUPLICATE}')
    AND o2.person_id = orders.person_id AND o2.cert_type = orders.cert_type
    AND NOT {malformed_sql("o2", dialect)}
    AND (o2.requested_at < orders.requested_at
         OR (o2.requested_at = orders.requested_at AND o2.order_id < orders.order_id)))
"""


def sqlite_ts(t: dt.datetime) -> str:
    """A UTC timestamp in the one stored form of SQLite (so that strings compare)."""
    return now_param(t, "sqlite")


def _claim_sql(limit: int | None, dialect: str) -> str:
    lim = f" LIMIT {int(limit)}" if limit is not None else ""
    lock = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    return f"""
UPDATE orders SET state = '{CLAIMED}', claimed_by_run = :run, claimed_at = :now
WHERE order_id IN (
  SELECT o.order_id FROM orders o
  WHERE o.state = '{PENDING}' AND ({valid_sql("o", dialect)} OR {malformed_sql("o", dialect)})
  ORDER BY o.requested_at, o.order_id{lim}{lock})
"""


def _whole_persons_sql(dialect: str) -> str:
    """The other pending, consenting orders of the persons (and types) just claimed."""
    return f"""
UPDATE orders SET state = '{CLAIMED}', claimed_by_run = :run, claimed_at = :now
WHERE order_id IN (
  SELECT o.order_id FROM orders o
  WHERE o.state = '{PENDING}' AND {valid_sql("o", dialect)}
    AND EXISTS (
      SELECT 1 FROM orders f
      WHERE f.claimed_by_run = :run AND f.state = '{CLAIMED}'
        AND f.person_id = o.person_id AND f.cert_type = o.cert_type
        AND NOT {malformed_sql("f", dialect)}))
"""


def release_orphaned_duplicates(conn, run_id: str) -> int:
    """DUPLICATE orders of ``run_id`` whose person (and type) no longer has a first order
    in the run (CLAIMED or FULFILLED) go back to PENDING, so that a later run can take them.
    Runs on an open connection (in the caller's transaction). Returns the number released."""
    from sqlalchemy import text

    dialect = conn.dialect.name
    sql = f"""
UPDATE orders SET state = '{PENDING}', claimed_by_run = NULL, claimed_at = NULL
WHERE order_id IN (
  SELECT d.order_id FROM orders d
  WHERE d.claimed_by_run = :run AND d.state = '{DUPLICATE}'
    AND NOT EXISTS (
      SELECT 1 FROM orders f
      WHERE f.claimed_by_run = :run AND f.state IN ('{CLAIMED}', '{FULFILLED}')
        AND f.person_id = d.person_id AND f.cert_type = d.cert_type
        AND NOT {malformed_sql("f", dialect)}))
"""
    return conn.execute(text(sql), {"run": run_id}).rowcount


def promote_orphaned_duplicates(conn, run_id: str, now) -> int:
    """Before the extract reads: a DUPLICATE whose first order left the run takes its place
    (CLAIMED) when its own consent holds; of several, the first stays CLAIMED and the rest
    DUPLICATE again. ``now`` as :func:`jobs.sources.consent.now_param` gives it. Returns the
    number promoted (net)."""
    from sqlalchemy import text

    dialect = conn.dialect.name
    promote = f"""
UPDATE orders SET state = '{CLAIMED}'
WHERE order_id IN (
  SELECT d.order_id FROM orders d
  WHERE d.claimed_by_run = :run AND d.state = '{DUPLICATE}' AND {valid_sql("d", dialect)}
    AND NOT EXISTS (
      SELECT 1 FROM orders f
      WHERE f.claimed_by_run = :run AND f.state IN ('{CLAIMED}', '{FULFILLED}')
        AND f.person_id = d.person_id AND f.cert_type = d.cert_type
        AND NOT {malformed_sql("f", dialect)}))
"""
    up = conn.execute(text(promote), {"run": run_id, "now": now}).rowcount
    if not up:
        return 0
    down = conn.execute(text(_duplicates_sql(dialect)), {"run": run_id}).rowcount
    return up - down


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
    ``limit``), whole persons: the same persons' other pending orders of the same type come
    along (past the limit) and become DUPLICATE of the first. Orders with a malformed
    instant are claimed for the extract to quarantine. Returns (orders claimed for
    extraction, duplicates)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from jobs.db import engine

    url = _url(settings, url)
    if limit is not None and limit < 0:
        raise ValueError("limit must not be negative")
    u = make_url(url)
    steps = ("claim", "whole", "dups")
    if u.get_backend_name() == "sqlite":
        import sqlite3

        con = sqlite3.connect(u.database, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("BEGIN IMMEDIATE")
            try:
                params = {"run": run_id, "now": now_param(now, "sqlite")}
                n = {
                    step: con.execute(sql, params).rowcount
                    for step, sql in zip(steps, _claim_statements(limit, "sqlite"), strict=True)
                }
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
    else:
        with engine(url).begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK_KEY})
            params = {"run": run_id, "now": now_param(now, "postgresql")}
            n = {
                step: conn.execute(text(sql), params).rowcount
                for step, sql in zip(steps, _claim_statements(limit, "postgresql"), strict=True)
            }
    claimed = n["claim"] + n["whole"]
    return claimed - n["dups"], n["dups"]


def _claim_statements(limit: int | None, dialect: str) -> list[str]:
    return [_claim_sql(limit, dialect), _whole_persons_sql(dialect), _duplicates_sql(dialect)]


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
    Fulfilled orders are never released; the run's duplicates of a released order go back
    with it. Returns the number of orders released."""
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
        total += release_orphaned_duplicates(conn, run_id)
    return total


def release_withdrawn(
    run_id: str,
    order_ids: Iterable[str],
    settings: Settings | None = None,
    *,
    url: str | None = None,
) -> int:
    """Give back the orders of ``run_id`` whose consent lapsed after the extract and that
    were NOT answered (CLAIMED, or FULFILLED by a finished run although their certificate
    was never delivered — the caller knows which): PENDING again, unclaimed; a later run
    takes them only if consent is given again. The run's DUPLICATE orders that were waiting
    on one of them become PENDING too (:func:`release_orphaned_duplicates`), so that a
    person's valid later order is not left DUPLICATE forever. Idempotent. Returns the
    number of orders given back."""
    from sqlalchemy import bindparam, text

    from jobs.db import engine

    ids = list(dict.fromkeys(order_ids))
    sql = text(
        f"UPDATE orders SET state = '{PENDING}', claimed_by_run = NULL, claimed_at = NULL,"
        " fulfilled_at = NULL"
        f" WHERE claimed_by_run = :run AND state IN ('{CLAIMED}', '{FULFILLED}')"
        " AND order_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    total = 0
    with engine(_url(settings, url)).begin() as conn:
        for chunk in _chunks(ids):
            total += conn.execute(sql, {"run": run_id, "ids": chunk}).rowcount
        total += release_orphaned_duplicates(conn, run_id)
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
