"""Revocations in the ledger: who revoked which certificate, when and why; and the
revocation batches for the EU gateway — planned here from the revoked certificates'
hashes, their files and uploads done by ``jobs.gateway.revocation``.

Certificates are named by UVCI only (the incident process says so). Nothing is deleted:
a revocation stays; a batch the gateway deleted keeps its row with ``deleted_at``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError

from jobs.errors import LedgerMismatch, Refusal, UnknownCertificate
from jobs.ledger.models import (
    Certificate,
    Revocation,
    RevocationBatch,
    RevocationBatchEntry,
    RevocationReason,
)
from jobs.ledger.runs import ledger
from jobs.settings import Settings

REASONS = tuple(r.value for r in RevocationReason)
MAX_ENTRIES = 1000  # RevocationBatchDto.entries: @Size(min = 1, max = 1000)
MAX_NOTE = 500
HASH_COLUMNS = {
    "UCI": Certificate.hash_uci,
    "COUNTRYCODEUCI": Certificate.hash_countrycodeuci,
    "SIGNATURE": Certificate.hash_signature,
}
SQL_CHUNK = 5000


@dataclass(frozen=True)
class RevocationRecord:
    uvci: str
    reason: str
    note: str | None
    who: str
    at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "uvci": self.uvci,
            "revoked": True,
            "reason": self.reason,
            "note": self.note,
            "who": self.who,
            "at": _aware(self.at).isoformat(),
        }


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _insert_ignore(conn, table: Any, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, both dialects."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).on_conflict_do_nothing(), rows)


def check_note(note: str | None) -> str | None:
    """A note is free text for the incident record: at most 500 characters, and never an
    identity number (the record names certificates by UVCI only)."""
    from jobs.log import IDENTITY_NUMBER

    if note is None or not note.strip():
        return None
    if len(note) > MAX_NOTE:
        raise Refusal(f"the note has {len(note)} characters; at most {MAX_NOTE}")
    if IDENTITY_NUMBER.search(note):
        raise Refusal(
            "the note holds what looks like an identity number: name certificates by UVCI only"
        )
    return note.strip()


def revoke(
    uvcis: Sequence[str],
    reason: str,
    *,
    who: str,
    note: str | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> list[RevocationRecord]:
    """Revoke certificates by UVCI: a ``revocations`` row each and ``revoked_at`` set, in one
    transaction. Revoking a revoked certificate is a no-op that answers the same record
    (the first reason, operator and time stand). Every UVCI must be in the ledger, else
    :class:`UnknownCertificate` and nothing is revoked."""
    if reason not in REASONS:
        raise Refusal(f"reason {reason!r} is not one of {', '.join(REASONS)}")
    who = (who or "").strip()
    if not who or len(who) > 64:
        raise Refusal("the operator's user name (who) is missing or longer than 64 characters")
    note = check_note(note)
    wanted = list(dict.fromkeys(uvcis))
    if not wanted:
        raise Refusal("no UVCI given")
    at = now or dt.datetime.now(dt.UTC)
    eng = ledger(settings)
    with eng.begin() as conn:
        known = set()
        for i in range(0, len(wanted), SQL_CHUNK):
            chunk = wanted[i : i + SQL_CHUNK]
            known |= set(conn.scalars(select(Certificate.uvci).where(Certificate.uvci.in_(chunk))))
        unknown = [u for u in wanted if u not in known]
        if unknown:
            raise UnknownCertificate(
                f"not in the ledger: {', '.join(unknown[:10])}"
                + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                + "; nothing was revoked"
            )
        rows = [
            {"uvci": u, "reason": RevocationReason(reason), "note": note, "who": who, "at": at}
            for u in wanted
        ]
        _insert_ignore(conn, Revocation, rows)
        for i in range(0, len(wanted), SQL_CHUNK):
            chunk = wanted[i : i + SQL_CHUNK]
            conn.execute(
                update(Certificate)
                .where(Certificate.uvci.in_(chunk), Certificate.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        found = _records(conn, wanted)
    return [found[u] for u in wanted]


def _records(conn, uvcis: Sequence[str]) -> dict[str, RevocationRecord]:
    out = {}
    for i in range(0, len(uvcis), SQL_CHUNK):
        chunk = list(uvcis[i : i + SQL_CHUNK])
        for r in conn.execute(select(Revocation).where(Revocation.uvci.in_(chunk))):
            out[r.uvci] = RevocationRecord(r.uvci, r.reason.value, r.note, r.who, _aware(r.at))
    return out


def revocation_of(uvci: str, settings: Settings | None = None) -> RevocationRecord | None:
    """The certificate's revocation, or None."""
    with ledger(settings).connect() as conn:
        return _records(conn, [uvci]).get(uvci)


# --- revocation batches -------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    new_batches: list[str]
    missing_hashes: list[str]  # revoked certificates signed before the hashes were kept
    expired: int  # revoked certificates already expired: no verifier accepts them anyway


def _iso(t: dt.datetime) -> str:
    return _aware(t).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_document(conn, batch: Any) -> bytes:
    """The batch's RevocationBatchDto as JSON bytes, from its entries in the ledger (sorted by
    hash: the same batch is always the same bytes)."""
    from signing.revocation import batch_json

    column = HASH_COLUMNS[batch.hash_type]
    hashes = sorted(
        conn.scalars(
            select(column)
            .join(RevocationBatchEntry, RevocationBatchEntry.uvci == Certificate.uvci)
            .where(RevocationBatchEntry.batch == batch.id)
        )
    )
    return batch_json(batch.country, _iso(batch.expires), batch.kid, batch.hash_type, hashes)


def plan_batches(
    hash_types: Iterable[str],
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> PlanResult:
    """Put every revoked, unexpired certificate not yet in a batch of a hash type into new
    batches of that type: one per issuing country and kid, at most 1000 entries, expires =
    the latest exp among them. Idempotent: a certificate enters one batch per hash type
    (a unique key), so a rerun — or a concurrent planner — plans nothing twice."""
    now = now or dt.datetime.now(dt.UTC)
    eng = ledger(settings)
    for attempt in range(3):
        try:
            with eng.begin() as conn:
                return _plan(conn, list(hash_types), now)
        except IntegrityError:  # another planner took some of them first: plan the rest
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _plan(conn, hash_types: list[str], now: dt.datetime) -> PlanResult:
    new: list[str] = []
    missing: set[str] = set()
    expired: set[str] = set()
    for hash_type in hash_types:
        column = HASH_COLUMNS[hash_type]
        taken = exists().where(
            RevocationBatchEntry.uvci == Revocation.uvci,
            RevocationBatchEntry.hash_type == hash_type,
        )
        rows = conn.execute(
            select(
                Revocation.uvci,
                Certificate.kid,
                Certificate.exp,
                Certificate.issuer_country,
                column.label("hash"),
            )
            .join(Certificate, Certificate.uvci == Revocation.uvci)
            .where(~taken)
            .order_by(Revocation.id)
        ).all()
        groups: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            if r.exp <= now.timestamp():
                expired.add(r.uvci)
            elif r.hash is None or r.issuer_country is None:
                missing.add(r.uvci)
            else:
                groups.setdefault((r.issuer_country, r.kid), []).append(r)
        for (country, kid), members in sorted(groups.items()):
            seq = conn.scalar(
                select(func.count())
                .select_from(RevocationBatch)
                .where(
                    RevocationBatch.country == country,
                    RevocationBatch.kid == kid,
                    RevocationBatch.hash_type == hash_type,
                )
            )
            for i in range(0, len(members), MAX_ENTRIES):
                chunk = members[i : i + MAX_ENTRIES]
                seq += 1
                batch_id = f"{country}-{hash_type}-{_kid_hex(kid)}-{seq:04d}"
                expires = dt.datetime.fromtimestamp(max(m.exp for m in chunk), dt.UTC)
                conn.execute(
                    RevocationBatch.__table__.insert(),
                    {
                        "id": batch_id,
                        "country": country,
                        "kid": kid,
                        "hash_type": hash_type,
                        "expires": expires,
                        "entries": len(chunk),
                        "entries_sha256": "",
                        "created_at": now,
                    },
                )
                conn.execute(
                    RevocationBatchEntry.__table__.insert(),
                    [{"batch": batch_id, "uvci": m.uvci, "hash_type": hash_type} for m in chunk],
                )
                row = conn.execute(
                    select(RevocationBatch).where(RevocationBatch.id == batch_id)
                ).one()
                digest = hashlib.sha256(batch_document(conn, row)).hexdigest()
                conn.execute(
                    update(RevocationBatch)
                    .where(RevocationBatch.id == batch_id)
                    .values(entries_sha256=digest)
                )
                new.append(batch_id)
    return PlanResult(new, sorted(missing), len(expired))


def _kid_hex(kid: str) -> str:
    """The kid in a file name: hex of its bytes (base64 holds '/' and '+')."""
    import base64
    import binascii

    try:
        return base64.b64decode(kid, validate=True).hex()
    except (binascii.Error, ValueError):
        return hashlib.sha256(kid.encode()).hexdigest()[:16]


def live_batches(
    settings: Settings | None = None, now: dt.datetime | None = None
) -> list[tuple[Any, bytes]]:
    """Every batch not deleted whose expires is still ahead, with its JSON (checked against
    the digest recorded when it was planned: a batch never changes)."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    with ledger(settings).connect() as conn:
        rows = conn.execute(
            select(RevocationBatch)
            .where(RevocationBatch.deleted_at.is_(None))
            .order_by(RevocationBatch.created_at, RevocationBatch.id)
        ).all()
        for b in rows:
            if _aware(b.expires) <= now:
                continue
            document = batch_document(conn, b)
            if hashlib.sha256(document).hexdigest() != b.entries_sha256:
                raise LedgerMismatch(
                    f"revocation batch {b.id}: its entries no longer match the digest recorded "
                    "when it was planned"
                )
            out.append((b, document))
    return out


def batches(settings: Settings | None = None) -> list[Any]:
    """Every revocation batch row, oldest first."""
    with ledger(settings).connect() as conn:
        return list(
            conn.execute(
                select(RevocationBatch).order_by(RevocationBatch.created_at, RevocationBatch.id)
            ).all()
        )


def batch_by_ref(ref: str, settings: Settings | None = None) -> Any | None:
    """A batch by its local id or the gateway's batch id."""
    with ledger(settings).connect() as conn:
        return conn.execute(
            select(RevocationBatch).where(
                (RevocationBatch.id == ref) | (RevocationBatch.batch_id == ref)
            )
        ).first()


def mark_upload_started(
    batch: str, settings: Settings | None = None, now: dt.datetime | None = None
) -> None:
    """Written before the upload leaves: the batch may be at the gateway from now on."""
    with ledger(settings).begin() as conn:
        conn.execute(
            update(RevocationBatch)
            .where(RevocationBatch.id == batch, RevocationBatch.batch_id.is_(None))
            .values(upload_started_at=now or dt.datetime.now(dt.UTC))
        )


def mark_uploaded(
    batch: str,
    gateway_batch_id: str,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> None:
    with ledger(settings).begin() as conn:
        conn.execute(
            update(RevocationBatch)
            .where(RevocationBatch.id == batch)
            .values(batch_id=gateway_batch_id, uploaded_at=now or dt.datetime.now(dt.UTC))
        )


def mark_deleted(
    batch: str, settings: Settings | None = None, now: dt.datetime | None = None
) -> None:
    with ledger(settings).begin() as conn:
        conn.execute(
            update(RevocationBatch)
            .where(RevocationBatch.id == batch, RevocationBatch.deleted_at.is_(None))
            .values(deleted_at=now or dt.datetime.now(dt.UTC))
        )


def revocation_counts(settings: Settings | None = None) -> dict[str, int]:
    """Revocations by reason (for reports and the CLI)."""
    with ledger(settings).connect() as conn:
        rows = conn.execute(
            select(Revocation.reason, func.count()).group_by(Revocation.reason)
        ).all()
    return {r.value: n for r, n in rows}
