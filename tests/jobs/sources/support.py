"""Helpers of the sources tests: orders written straight into the register (raw SQL, in the
form the register stores instants), as the ordering e-service would."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from jobs.db import engine


def stored(url: str, t: dt.datetime | None):
    """An instant as the register stores it: stored-form UTC text on SQLite, else as is."""
    if t is None or not url.startswith("sqlite"):
        return t
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def add_orders(url: str, rows: list[dict], persons: bool = False) -> None:
    """Insert orders (and, with ``persons``, a population row per person)."""
    now = dt.datetime.now(dt.UTC)
    with engine(url).begin() as conn:
        seen: set[str] = set()
        for r in rows:
            pnr = r.get("person_id", "19800101" + r["order_id"][-4:].rjust(4, "0"))
            if persons and pnr not in seen:
                seen.add(pnr)
                conn.execute(
                    text(
                        "INSERT INTO population (person_id, given_name, family_name, dob,"
                        " protected_identity) VALUES (:p, 'ANNA', 'TESTSSON', '1980-01-01', :f)"
                    ),
                    {"p": pnr, "f": False},
                )
            conn.execute(
                text(
                    "INSERT INTO orders (order_id, person_id, requested_at, consent_at,"
                    " consent_withdrawn_at, cert_type, state, claimed_by_run)"
                    " VALUES (:o, :p, :req, :c, :w, :t, :st, :run)"
                ),
                {
                    "o": r["order_id"],
                    "p": pnr,
                    "req": stored(url, r.get("requested_at", now - dt.timedelta(hours=72))),
                    "c": stored(url, r.get("consent_at")),
                    "w": stored(url, r.get("consent_withdrawn_at")),
                    "t": r.get("cert_type", "v"),
                    "st": r.get("state", "PENDING"),
                    "run": r.get("claimed_by_run"),
                },
            )


def set_withdrawn(url: str, order_ids: list[str], at: dt.datetime) -> None:
    """The e-service records a withdrawal (raw SQL)."""
    with engine(url).begin() as conn:
        for o in order_ids:
            conn.execute(
                text("UPDATE orders SET consent_withdrawn_at = :w WHERE order_id = :o"),
                {"w": stored(url, at), "o": o},
            )
