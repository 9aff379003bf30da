"""Consent, decided in SQL in the sources database, at the last moment it can change.

The rule (one rule, used by the claim, the extract and every later re-check): consent was
given, not in the future, and not withdrawn — a withdrawal counts unless consent was given
again after it::

    consent_at IS NOT NULL AND consent_at <= now
    AND (consent_withdrawn_at IS NULL OR consent_withdrawn_at < consent_at)

Instants. On PostgreSQL the columns are ``timestamptz``: typed, compared as instants. On
SQLite they are text, and text compares as text — so bevis stores every instant of the
sources database in ONE form, UTC in SQLAlchemy's own storage format
``YYYY-MM-DD HH:MM:SS.ffffff`` (:data:`STORAGE_FORMAT`), in which text order is time order.
Anything else — a ``T`` separator, no microseconds, a ``Z`` or ``+02:00`` suffix, an integer
epoch — is *malformed*:

* refused where bevis writes (:func:`instant`, :func:`to_storage`, the seeder, the write
  helpers below, and the ``Order`` column type in :mod:`jobs.sources.models`);
* converted once, for rows written before this rule, by migration ``sources_0003``;
* if one still turns up (another system writes the register), the SQL below does not judge
  it: :func:`valid_sql` is false for it and :func:`malformed_sql` true, the claim takes the
  order and the extract quarantines it (``invalid_consent_time``) — one order held back,
  never the whole run stopped, never a guess.

:func:`valid_consent` and :func:`is_storage_form` are the same rule in Python (the property
tests hold the SQL to them on SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Any

from jobs.errors import InvalidInstant
from jobs.settings import Settings, get_settings

UTC = dt.UTC
STORAGE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
# The instants of an order that the claim and the consent rule compare.
TIME_COLUMNS = ("requested_at", "consent_at", "consent_withdrawn_at")
SQL_CHUNK = 5000  # order ids per IN (...) list

_STORAGE_RE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")
_D = "[0-9]"
_STORAGE_GLOB = f"{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}.{_D * 6}"


# --------------------------------------------------------------------------- Python side
def instant(value: Any, column: str = "instant", order_id: str | None = None) -> dt.datetime:
    """An intake's instant as an aware UTC datetime: an aware ``datetime``, or ISO 8601 text
    WITH its offset (``Z`` or ``±HH:MM``). Anything else — naive (which zone?), an epoch
    number (seconds? milliseconds?), unparseable text — is refused with
    :class:`InvalidInstant` naming the order and the column, never the value."""
    who = f"order {order_id}: " if order_id else ""
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInstant(f"{who}{column} is not an ISO 8601 instant") from None
    else:
        raise InvalidInstant(
            f"{who}{column} must be a datetime or ISO 8601 text, not {type(value).__name__}"
        )
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidInstant(f"{who}{column} has no UTC offset (naive instants are refused)")
    return t.astimezone(UTC)


def to_storage(value: Any, column: str = "instant", order_id: str | None = None) -> str:
    """The one stored form of an instant on SQLite (UTC, fixed width, microseconds)."""
    return instant(value, column, order_id).strftime(STORAGE_FORMAT)


def from_storage(text: str) -> dt.datetime:
    """The instant of a stored text (:class:`InvalidInstant` when it is not in the form)."""
    if not is_storage_form(text):
        raise InvalidInstant("not an instant in the storage form")
    return dt.datetime.strptime(text, STORAGE_FORMAT).replace(tzinfo=UTC)


def is_storage_form(value: Any) -> bool:
    """Is ``value`` (as SQLite hands it back) an instant in the one stored form? The
    Python mirror of :func:`well_formed_sql`."""
    if not isinstance(value, str) or not _STORAGE_RE.fullmatch(value):
        return False
    try:
        dt.datetime.strptime(value, STORAGE_FORMAT)
    except ValueError:
        return False
    return True


def valid_consent(
    consent_at: dt.datetime | None, withdrawn_at: dt.datetime | None, now: dt.datetime
) -> bool:
    """The consent rule on instants (aware datetimes, or None)."""
    return (
        consent_at is not None
        and consent_at <= now
        and (withdrawn_at is None or withdrawn_at < consent_at)
    )


# --------------------------------------------------------------------------- SQL side
def well_formed_sql(column: str, dialect: str) -> str:
    """SQL: the (non-null) value of ``column`` is an instant in the stored form. Always
    true on PostgreSQL (typed columns). On SQLite: text of the fixed shape, a real calendar
    time (the julianday round trip turns 2026-02-31 into 2026-03-03 and 24:00 into the next
    day, so those fail), year not 0000."""
    if dialect != "sqlite":
        return "TRUE"
    head = f"substr({column}, 1, 19)"
    return (
        f"(typeof({column}) = 'text' AND {column} GLOB '{_STORAGE_GLOB}'"
        f" AND substr({column}, 1, 4) <> '0000'"
        f" AND datetime(julianday({head})) IS {head})"
    )


def _all_well_formed(alias: str, dialect: str) -> str:
    if dialect != "sqlite":
        return "TRUE"
    parts = [
        f"({alias}.{c} IS NULL OR {well_formed_sql(f'{alias}.{c}', dialect)})" for c in TIME_COLUMNS
    ]
    return "(" + " AND ".join(parts) + ")"


def valid_sql(alias: str, dialect: str) -> str:
    """SQL over the orders table aliased ``alias``: the order's consent holds at ``:now``
    (and its instants are well formed, so that the comparison means what it says)."""
    o = alias
    return (
        f"({_all_well_formed(o, dialect)} AND {o}.consent_at IS NOT NULL"
        f" AND {o}.consent_at <= :now"
        f" AND ({o}.consent_withdrawn_at IS NULL OR {o}.consent_withdrawn_at < {o}.consent_at))"
    )


def malformed_sql(alias: str, dialect: str) -> str:
    """SQL: one of the order's instants is not in the stored form (never on PostgreSQL)."""
    if dialect != "sqlite":
        return "FALSE"
    return f"(NOT {_all_well_formed(alias, dialect)})"


def now_param(now: dt.datetime, dialect: str) -> Any:
    """``:now`` as the dialect compares it (stored-form text on SQLite)."""
    return to_storage(now, "now") if dialect == "sqlite" else instant(now, "now")


def malformed_columns(values: dict[str, Any]) -> list[str]:
    """The instant columns of one order row (as SQLite returns them) that are malformed."""
    return [c for c in TIME_COLUMNS if values.get(c) is not None and not is_storage_form(values[c])]


# --------------------------------------------------------------------------- queries
def _url(settings: Settings | None, url: str | None) -> str:
    return url or (settings or get_settings()).resolved_source_url()


def _chunks(ids: Sequence[str], size: int = SQL_CHUNK) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


def lapsed(
    order_ids: Sequence[str], settings: Settings | None = None, *, url: str | None = None
) -> set[str]:
    """The orders among these whose consent no longer holds (withdrawn after consent, or no
    consent), checked in SQL in the sources database, in chunks.

    "No longer holds" is the negation of the one rule: withdrawn and not given again,
    never given, given in the future, an instant that is not well formed (cannot be judged:
    not held to be consent), or the order is not in the register at all."""
    from sqlalchemy import bindparam, text

    from jobs.db import engine

    ids = list(dict.fromkeys(str(o) for o in order_ids))
    if not ids:
        return set()
    eng = engine(_url(settings, url))
    dialect = eng.dialect.name
    sql = text(
        f"SELECT o.order_id FROM orders o WHERE o.order_id IN :ids AND {valid_sql('o', dialect)}"
    ).bindparams(bindparam("ids", expanding=True))
    now = now_param(dt.datetime.now(UTC), dialect)
    holding: set[str] = set()
    with eng.connect() as conn:
        for chunk in _chunks(ids):
            holding.update(conn.execute(sql, {"ids": chunk, "now": now}).scalars())
    return set(ids) - holding


# --------------------------------------------------------------------------- intake
def set_consent(
    order_id: str,
    *,
    consent_at: Any = ...,
    consent_withdrawn_at: Any = ...,
    settings: Settings | None = None,
    url: str | None = None,
) -> None:
    """The sources-side write helper for consent (the e-service's intake, and tests): set
    either instant of one order, or both (None clears). Values go through :func:`instant`
    and are stored in the one form; a malformed value is refused (:class:`InvalidInstant`)
    before anything is written. Unknown order → LookupError."""
    from sqlalchemy import text

    from jobs.db import engine

    eng = engine(_url(settings, url))
    dialect = eng.dialect.name
    values: dict[str, Any] = {}
    for column, value in (
        ("consent_at", consent_at),
        ("consent_withdrawn_at", consent_withdrawn_at),
    ):
        if value is ...:
            continue
        if value is None:
            values[column] = None
        elif dialect == "sqlite":
            values[column] = to_storage(value, column, order_id)
        else:
            values[column] = instant(value, column, order_id)
    if not values:
        return
    sets = ", ".join(f"{c} = :{c}" for c in values)
    with eng.begin() as conn:
        n = conn.execute(
            text(f"UPDATE orders SET {sets} WHERE order_id = :order_id"),
            {**values, "order_id": order_id},
        ).rowcount
    if n == 0:
        raise LookupError(f"order {order_id} is not in the sources database")
