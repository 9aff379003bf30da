"""Instants in one form: every timestamp of the sources database on SQLite becomes UTC text
'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's storage format, in which text order is time
order), so that the consent rule compares instants, not strings.

SQLite has no timestamp type; other systems (and older seeders) wrote a 'T' separator, no
microseconds, a 'Z' or '+02:00' suffix, or an integer epoch — and the text comparison gave
wrong answers. Here each such value is read as the instant it names (naive text is UTC: the
convention of this database; an epoch number by its magnitude: s, ms or µs) and written back
in the one form. A value that names no instant is left as it is: the claim then holds its
order back for the extract to quarantine (``invalid_consent_time``), never a guess.

PostgreSQL stores ``timestamptz``: nothing to do. Self-contained on purpose (a revision
does not import the code it migrates). Downgrade keeps the values (0002 reads them).

Revision ID: sources_0003
Revises: sources_0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from alembic import op

revision = "sources_0003"
down_revision = "sources_0002"
branch_labels = None
depends_on = None

COLUMNS = {
    "orders": ("requested_at", "consent_at", "consent_withdrawn_at", "claimed_at", "fulfilled_at"),
    "nvr_vaccinations": ("reported_at",),
    "nvr_snapshots": ("taken_at",),
}
FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_D = "[0-9]"
_GLOB = f"{_D * 4}-{_D * 2}-{_D * 2} {_D * 2}:{_D * 2}:{_D * 2}"
_DIGITS = re.compile(r"[+-]?\d+(\.\d+)?")


def _stored_sql(c: str) -> str:
    """SQL: ``c`` is already in the one form (as jobs.sources.consent.well_formed_sql)."""
    head = f"substr({c}, 1, 19)"
    return (
        f"(typeof({c}) = 'text' AND {c} GLOB '{_GLOB}.{_D * 6}'"
        f" AND substr({c}, 1, 4) <> '0000' AND datetime(julianday({head})) IS {head})"
    )


def _instant(value) -> dt.datetime | None:
    """The instant a legacy value names, or None when it names none."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = abs(value)
        for low, per_second in ((1e9, 1), (1e12, 1e3), (1e15, 1e6)):
            if low <= size < low * 100:
                try:
                    return dt.datetime.fromtimestamp(value / per_second, dt.UTC)
                except (OverflowError, OSError, ValueError):
                    return None
        return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        return t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, columns in COLUMNS.items():
        for c in columns:
            # the common legacy case in SQL: whole seconds without the fraction
            bind.execute(
                sa.text(
                    f"UPDATE {table} SET {c} = {c} || '.000000'"
                    f" WHERE typeof({c}) = 'text' AND {c} GLOB '{_GLOB}'"
                    f" AND datetime(julianday({c})) IS {c}"
                )
            )
            rows = bind.execute(
                sa.text(
                    f"SELECT rowid, {c} FROM {table} WHERE {c} IS NOT NULL AND NOT {_stored_sql(c)}"
                )
            ).all()
            fixed = []
            for rowid, value in rows:
                t = _instant(value)
                if t is not None and 1 <= t.year <= 9999:
                    fixed.append({"rowid": rowid, "v": t.strftime(FORMAT)})
            if fixed:
                bind.execute(sa.text(f"UPDATE {table} SET {c} = :v WHERE rowid = :rowid"), fixed)


def downgrade() -> None:
    pass  # the one form is valid input for revision 0002 too
