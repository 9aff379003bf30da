"""Revocation batches between the ledger and the EU gateway: export them as files, upload
the new ones, delete them (by hand, or once expired), list what the gateway holds.

A batch's JSON is built from the ledger (jobs.ledger.revocations) and is the same bytes
every time; its CMS is signed with the upload certificate at the moment it is written or
sent. The ledger remembers each upload by the gateway's batch id, and writes
``upload_started_at`` before the request leaves: a rerun after a crash between the
gateway's answer and the ledger's record first looks for the batch at the gateway (its
content digest) and adopts it, so nothing is uploaded twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobs.errors import ConfigurationInvalid, GatewayRefused
from jobs.gateway.client import GatewayClient, GatewayError
from jobs.gateway.trust import upload_signer
from jobs.ledger import revocations as ledger_revocations
from jobs.log import get_logger
from jobs.settings import Settings, get_settings
from jobs.storage import write_text_atomic
from signing.revocation import HASH_TYPES

log = get_logger(__name__)
RECONCILE_SLACK = dt.timedelta(minutes=5)  # clocks of bevis and the gateway may differ


def _hash_types(hash_types: Iterable[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(hash_types or HASH_TYPES))
    bad = [t for t in chosen if t not in HASH_TYPES]
    if bad or not chosen:
        raise ConfigurationInvalid(
            f"hash types {', '.join(bad) or '(none)'}: choose from {', '.join(HASH_TYPES)}"
        )
    return chosen


def _plan(hash_types: Iterable[str] | None, s: Settings, now: dt.datetime) -> dict[str, Any]:
    plan = ledger_revocations.plan_batches(_hash_types(hash_types), s, now)
    if plan.missing_hashes:
        log.warning(
            "revoked certificates without revocation hashes (signed before they were kept)",
            count=len(plan.missing_hashes),
            uvcis=plan.missing_hashes[:10],
        )
    return {
        "planned": plan.new_batches,
        "missing_hashes": plan.missing_hashes,
        "expired_certificates": plan.expired,
    }


def export(
    out_dir: Path,
    hash_types: Iterable[str] | None = None,
    settings: Settings | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Plan batches for new revocations, then write every live batch (not deleted, expires
    ahead) as ``<batch>.json`` (the RevocationBatchDto) and ``<batch>.cms`` (base64 CMS
    SignedData with that JSON inside, signed with the upload key)."""
    from signing.cms import sign_b64

    s = settings or get_settings()
    now = now or dt.datetime.now(dt.UTC)
    cert, key = upload_signer(s)
    result = _plan(hash_types, s, now)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = set(_hash_types(hash_types))
    written = []
    for batch, document in ledger_revocations.live_batches(s, now):
        if batch.hash_type not in chosen:
            continue
        write_text_atomic(document.decode("utf-8"), out_dir / f"{batch.id}.json")
        write_text_atomic(sign_b64(document, cert, key) + "\n", out_dir / f"{batch.id}.cms")
        written.append(_describe(batch))
    return {**result, "out": str(out_dir), "batches": written}


def _describe(batch: Any) -> dict[str, Any]:
    return {
        "batch": batch.id,
        "gateway_batch_id": batch.batch_id,
        "kid": batch.kid,
        "hash_type": batch.hash_type,
        "entries": batch.entries,
        "expires": ledger_revocations._iso(batch.expires),
        "uploaded_at": batch.uploaded_at.isoformat() if batch.uploaded_at else None,
        "deleted_at": batch.deleted_at.isoformat() if batch.deleted_at else None,
    }


def _at_gateway(client: GatewayClient, since: dt.datetime, country: str) -> dict[str, str]:
    """Digest of the JSON inside each live batch of ``country`` changed after ``since`` →
    the gateway's batch id (to find uploads whose answer never reached the ledger)."""
    from signing.cms import CmsError, parse_verify

    found: dict[str, str] = {}
    for item in client.batch_list(since):
        if item.deleted or item.country != country:
            continue
        try:
            message = parse_verify(client.download(item.batch_id))
        except (CmsError, GatewayRefused):
            continue
        found[hashlib.sha256(message.payload).hexdigest()] = item.batch_id
    return found


def upload(
    settings: Settings | None = None,
    *,
    client: GatewayClient | None = None,
    url: str | None = None,
    hash_types: Iterable[str] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Plan batches for new revocations and upload every live batch the gateway does not
    hold yet; the gateway's batch id is recorded for each. A rerun uploads nothing twice."""
    from signing.cms import sign_b64

    s = settings or get_settings()
    now = now or dt.datetime.now(dt.UTC)
    cert, key = upload_signer(s)
    result = _plan(hash_types, s, now)
    pending = [(b, doc) for b, doc in ledger_revocations.live_batches(s, now) if b.batch_id is None]
    uploaded, adopted = [], []
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    try:
        interrupted = [b for b, _doc in pending if b.upload_started_at is not None]
        if interrupted:
            since = min(ledger_revocations._aware(b.upload_started_at) for b in interrupted)
            there = _at_gateway(client, since - RECONCILE_SLACK, s.issuer_country)
        else:
            there = {}
        for batch, document in pending:
            digest = hashlib.sha256(document).hexdigest()
            if batch.upload_started_at is not None and digest in there:
                ledger_revocations.mark_uploaded(batch.id, there[digest], s)
                adopted.append({"batch": batch.id, "gateway_batch_id": there[digest]})
                log.info("revocation batch found at the gateway", batch=batch.id)
                continue
            ledger_revocations.mark_upload_started(batch.id, s)
            batch_id = client.upload(sign_b64(document, cert, key))
            ledger_revocations.mark_uploaded(batch.id, batch_id, s)
            uploaded.append({"batch": batch.id, "gateway_batch_id": batch_id})
            log.info("revocation batch uploaded", batch=batch.id, gateway_batch_id=batch_id)
    finally:
        if own:
            client.close()
    return {**result, "uploaded": uploaded, "adopted": adopted}


def delete(
    ref: str,
    settings: Settings | None = None,
    *,
    client: GatewayClient | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Delete a batch at the gateway (by our batch name or the gateway's batch id) and
    record it. A batch the gateway has already deleted (410) is recorded as deleted too."""
    import re

    from signing.cms import sign_b64

    s = settings or get_settings()
    row = ledger_revocations.batch_by_ref(ref, s)
    gateway_id = row.batch_id if row is not None else ref
    if gateway_id is None:
        raise ConfigurationInvalid(f"revocation batch {ref} was never uploaded: nothing to delete")
    if row is None and not re.fullmatch(r"[0-9a-f-]{36}", ref):
        raise ConfigurationInvalid(f"{ref} is neither a batch in the ledger nor a gateway batch id")
    cert, key = upload_signer(s)
    body = json.dumps({"batchId": gateway_id}, separators=(",", ":")).encode()
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    state = "deleted"
    try:
        client.delete(sign_b64(body, cert, key), gateway_id)
    except GatewayError as exc:
        if exc.status != 410:
            raise
        state = "already_deleted"
    finally:
        if own:
            client.close()
    if row is not None:
        ledger_revocations.mark_deleted(row.id, s)
    return {
        "batch": row.id if row is not None else None,
        "gateway_batch_id": gateway_id,
        "state": state,
        "in_ledger": row is not None,
    }


def delete_expired(
    settings: Settings | None = None,
    *,
    client: GatewayClient | None = None,
    url: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Delete at the gateway every uploaded batch whose expires has passed (the gateway's
    own clean-up would too, a day later); 404/410 count as deleted."""
    s = settings or get_settings()
    now = now or dt.datetime.now(dt.UTC)
    due = [
        b
        for b in ledger_revocations.batches(s)
        if b.batch_id and b.deleted_at is None and ledger_revocations._aware(b.expires) <= now
    ]
    if not due:
        return {"deleted": []}
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    out = []
    try:
        for b in due:
            try:
                out.append(delete(b.id, s, client=client))
            except GatewayError as exc:
                if exc.status != 404:
                    raise
                ledger_revocations.mark_deleted(b.id, s)
                out.append({"batch": b.id, "gateway_batch_id": b.batch_id, "state": "not_found"})
    finally:
        if own:
            client.close()
    return {"deleted": out}


def gateway_list(
    settings: Settings | None = None,
    *,
    client: GatewayClient | None = None,
    url: str | None = None,
    since: str | dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """The gateway's batch list (every country's), oldest change first, each marked with our
    batch name where the ledger knows it."""
    from jobs.gateway.client import FIRST_LIST_DATE

    s = settings or get_settings()
    ours = {b.batch_id: b.id for b in ledger_revocations.batches(s) if b.batch_id}
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    try:
        items = list(client.batch_list(since or FIRST_LIST_DATE))
    finally:
        if own:
            client.close()
    return [
        {
            "gateway_batch_id": i.batch_id,
            "country": i.country,
            "date": i.date.isoformat(),
            "deleted": i.deleted,
            "batch": ours.get(i.batch_id),
        }
        for i in items
    ]


def downloaded_revocations(
    settings: Settings | None = None, *, client: GatewayClient | None = None, url: str | None = None
) -> set[str]:
    """Every entry hash of the live batches the gateway serves (each CMS must verify), for
    ``bevis verify --revocations URL``."""
    from signing.cms import CmsError, parse_verify
    from signing.revocation import RevocationError, batch_entries

    s = settings or get_settings()
    own = client is None
    client = client or GatewayClient.from_settings(s, url)
    out: set[str] = set()
    try:
        for item in client.batch_list():
            if item.deleted:
                continue
            try:
                message = parse_verify(client.download(item.batch_id))
            except CmsError as exc:
                raise RevocationError(f"gateway batch {item.batch_id}: {exc}") from None
            if not message.verified:
                raise RevocationError(
                    f"gateway batch {item.batch_id}: the CMS signature does not verify"
                )
            out.update(batch_entries(message.payload))
    finally:
        if own:
            client.close()
    return out
