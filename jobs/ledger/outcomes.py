"""Outcomes the ledger sets outside the delivery loop: a certificate whose person withdrew
consent after it was signed ends WITHDRAWN — never delivered, never printed.

Like every outcome update, it only sets an outcome where there is none yet (or DEFERRED,
which is "not yet" too): a certificate already DIGITAL or PAPER keeps its outcome.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, update

from data_quality.reasons import CONSENT_WITHDRAWN
from jobs.ledger.models import Certificate, Outcome
from jobs.ledger.runs import ledger
from jobs.settings import Settings

WITHDRAWN_REASON = CONSENT_WITHDRAWN
SQL_CHUNK = 5000


def mark_withdrawn(
    order_ids: Iterable[str],
    settings: Settings | None = None,
    *,
    reason: str = WITHDRAWN_REASON,
) -> dict[str, str]:
    """Give the certificates of these orders the outcome WITHDRAWN (reason ``reason``) where
    their outcome is still NULL or DEFERRED, in one transaction. Idempotent: orders without
    a certificate, or whose certificate already has a final outcome (DIGITAL, PAPER,
    WITHDRAWN), are left alone. Returns ``{order_id: uvci}`` of the certificates marked by
    this call."""
    ids = list(dict.fromkeys(order_ids))
    marked: dict[str, str] = {}
    if not ids:
        return marked
    still_open = or_(Certificate.outcome.is_(None), Certificate.outcome == Outcome.DEFERRED)
    with ledger(settings).begin() as conn:
        for i in range(0, len(ids), SQL_CHUNK):
            chunk = ids[i : i + SQL_CHUNK]
            rows = conn.execute(
                update(Certificate)
                .where(Certificate.order_id.in_(chunk), still_open)
                .values(outcome=Outcome.WITHDRAWN, outcome_reason=reason[:64])
                .returning(Certificate.order_id, Certificate.uvci)
            ).all()
            marked.update({r.order_id: r.uvci for r in rows})
    return marked


def withdrawn_of(order_ids: Iterable[str], settings: Settings | None = None) -> dict[str, str]:
    """``{order_id: uvci}`` of these orders' certificates that are WITHDRAWN."""
    from sqlalchemy import select

    ids = list(dict.fromkeys(order_ids))
    out: dict[str, str] = {}
    with ledger(settings).connect() as conn:
        for i in range(0, len(ids), SQL_CHUNK):
            out.update(
                conn.execute(
                    select(Certificate.order_id, Certificate.uvci).where(
                        Certificate.order_id.in_(ids[i : i + SQL_CHUNK]),
                        Certificate.outcome == Outcome.WITHDRAWN,
                    )
                ).all()
            )
    return out


def answered(order_ids: Iterable[str], settings: Settings | None = None) -> set[str]:
    """The orders among these whose certificate was delivered or queued for print."""
    from sqlalchemy import select

    ids = list(dict.fromkeys(order_ids))
    out: set[str] = set()
    with ledger(settings).connect() as conn:
        for i in range(0, len(ids), SQL_CHUNK):
            out.update(
                conn.scalars(
                    select(Certificate.order_id).where(
                        Certificate.order_id.in_(ids[i : i + SQL_CHUNK]),
                        Certificate.outcome.in_((Outcome.DIGITAL, Outcome.PAPER)),
                    )
                )
            )
    return out
