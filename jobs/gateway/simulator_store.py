"""The gateway simulator's store: its trusted parties, the revocation batches it received
(the CMS exactly as uploaded) and its audit events, in SQLite for inspection."""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from signing import cms

READER, UPLOADER, DELETER = "RevocationListReader", "RevocationUploader", "RevocationDeleter"
ROLES = frozenset({READER, UPLOADER, DELETER})
AUTHENTICATION, UPLOAD, CSCA = "AUTHENTICATION", "UPLOAD", "CSCA"

SCHEMA = """
CREATE TABLE IF NOT EXISTS trusted_parties (
    thumbprint TEXT NOT NULL,
    country TEXT NOT NULL,
    type TEXT NOT NULL,
    roles TEXT NOT NULL,
    raw_data TEXT NOT NULL,
    created_us INTEGER,
    PRIMARY KEY (thumbprint, country, type)
);
CREATE TABLE IF NOT EXISTS revocation_batches (
    batch_id TEXT PRIMARY KEY,
    country TEXT NOT NULL,
    changed_us INTEGER NOT NULL,
    expires TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    type TEXT NOT NULL,
    kid TEXT,
    signed_batch TEXT
);
CREATE INDEX IF NOT EXISTS ix_batches_changed ON revocation_batches (changed_us);
CREATE TABLE IF NOT EXISTS signer_information (
    thumbprint TEXT PRIMARY KEY,
    country TEXT NOT NULL,
    raw_data TEXT NOT NULL,
    signature TEXT,
    created_us INTEGER NOT NULL,
    deleted_us INTEGER
);
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY,
    country TEXT NOT NULL,
    uploader_thumbprint TEXT,
    type TEXT NOT NULL,
    description TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_us(t: dt.datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def from_us(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)


def parse_instant(text: Any) -> dt.datetime:
    """An ISO-8601 date-time with an offset (ZonedDateTime); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError("not a date-time")
    value = dt.datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError("no offset")
    return value


@dataclass(frozen=True)
class TrustedParty:
    """A country's certificate registered at the gateway: AUTHENTICATION (the TLS client,
    with roles), UPLOAD (signs CMS packages) or CSCA."""

    country: str
    type: str
    cert: x509.Certificate
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def thumbprint(self) -> str:
        return cms.thumbprint(self.cert)


def _signer_row(r: tuple) -> dict[str, Any]:
    thumbprint, country, raw, signature, created, deleted = r
    return {
        "thumbprint": thumbprint,
        "country": country,
        "raw_data": raw,
        "signature": signature,
        "created": from_us(created),
        "deleted": from_us(deleted) if deleted is not None else None,
    }


class GatewayStore:
    """The simulator's SQLite: trusted parties, batches, audit events (thread-safe)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a simulator: no fsync per request
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(trusted_parties)")}
        if columns and "created_us" not in columns:  # a store of an earlier simulator
            self._db.execute("ALTER TABLE trusted_parties ADD COLUMN created_us INTEGER")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.hold_uploads = threading.Event()  # drills: answer no upload while set

    def _x(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # trusted parties
    def add_party(self, party: TrustedParty) -> None:
        raw = base64.b64encode(party.cert.public_bytes(serialization.Encoding.DER)).decode()
        key = (party.thumbprint, party.country, party.type)
        roles = ",".join(sorted(party.roles))
        self._x(
            "INSERT INTO trusted_parties VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
            "(thumbprint, country, type) DO UPDATE SET roles = excluded.roles",
            (*key, roles, raw, to_us(now_utc())),
        )

    def party_roles(self, thumbprint: str, country: str, kind: str) -> frozenset[str] | None:
        rows = self._x(
            "SELECT roles FROM trusted_parties WHERE thumbprint = ? AND country = ? AND type = ?",
            (thumbprint, country, kind),
        )
        return frozenset(r for r in rows[0][0].split(",") if r) if rows else None

    def certificates(self, kind: str) -> list[x509.Certificate]:
        rows = self._x("SELECT raw_data FROM trusted_parties WHERE type = ?", (kind,))
        return [x509.load_der_x509_certificate(base64.b64decode(r[0])) for r in rows]

    def parties(self) -> list[tuple[TrustedParty, dt.datetime]]:
        """Every trusted party and when it was registered (first)."""
        rows = self._x(
            "SELECT country, type, roles, raw_data, created_us FROM trusted_parties ORDER BY rowid"
        )
        return [
            (
                TrustedParty(
                    c,
                    k,
                    x509.load_der_x509_certificate(base64.b64decode(raw)),
                    frozenset(r for r in roles.split(",") if r),
                ),
                from_us(created or 0),
            )
            for c, k, roles, raw, created in rows
        ]

    # signer information: the countries' DSCs
    def signer(self, thumbprint: str) -> dict[str, Any] | None:
        rows = self._x(
            "SELECT thumbprint, country, raw_data, signature, created_us, deleted_us "
            "FROM signer_information WHERE thumbprint = ?",
            (thumbprint,),
        )
        return _signer_row(rows[0]) if rows else None

    def signers(self) -> list[dict[str, Any]]:
        rows = self._x(
            "SELECT thumbprint, country, raw_data, signature, created_us, deleted_us "
            "FROM signer_information ORDER BY created_us"
        )
        return [_signer_row(r) for r in rows]

    def add_signer(self, thumbprint: str, country: str, raw_data: str, signature: str) -> None:
        """Store a DSC; one deleted before (signature NULL) is replaced (SignerInformationService)."""
        self._x(
            "INSERT OR REPLACE INTO signer_information VALUES (?, ?, ?, ?, ?, NULL)",
            (thumbprint, country, raw_data, signature, to_us(now_utc())),
        )

    def delete_signer(self, thumbprint: str) -> None:
        self._x(
            "UPDATE signer_information SET signature = NULL, deleted_us = ? WHERE thumbprint = ?",
            (to_us(now_utc()), thumbprint),
        )

    # batches
    def add_batch(
        self,
        *,
        country: str,
        expires: str,
        kind: str,
        kid: str | None,
        signed_batch: str | None,
        changed: dt.datetime | None = None,
        deleted: bool = False,
        batch_id: str | None = None,
    ) -> str:
        batch_id = batch_id or str(uuid.uuid4())
        self._x(
            "INSERT INTO revocation_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch_id,
                country,
                to_us(changed or now_utc()),
                expires,
                int(deleted),
                kind,
                kid,
                signed_batch,
            ),
        )
        return batch_id

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        rows = self._x(
            "SELECT batch_id, country, changed_us, expires, deleted, type, kid, signed_batch "
            "FROM revocation_batches WHERE batch_id = ?",
            (batch_id,),
        )
        if not rows:
            return None
        b, c, ch, ex, de, ty, k, sb = rows[0]
        return {
            "batch_id": b,
            "country": c,
            "changed": from_us(ch),
            "expires": ex,
            "deleted": bool(de),
            "type": ty,
            "kid": k,
            "signed_batch": sb,
        }

    def mark_deleted(self, batch_id: str, at: dt.datetime | None = None) -> None:
        """As the gateway's ``markBatchAsDeleted``: the CMS is dropped, the batch reappears
        in the list delta as deleted."""
        self._x(
            "UPDATE revocation_batches SET signed_batch = NULL, deleted = 1, changed_us = ? "
            "WHERE batch_id = ?",
            (to_us(at or now_utc()), batch_id),
        )

    def since(self, threshold: dt.datetime, limit: int) -> list[tuple]:
        return self._x(
            "SELECT batch_id, country, changed_us, deleted FROM revocation_batches "
            "WHERE changed_us > ? ORDER BY changed_us, batch_id LIMIT ?",
            (to_us(threshold), limit),
        )

    def batches(self) -> list[dict[str, Any]]:
        rows = self._x("SELECT batch_id FROM revocation_batches ORDER BY changed_us, batch_id")
        return [b for (bid,) in rows if (b := self.batch(bid)) is not None]

    def count_batches(self) -> int:
        return self._x("SELECT count(*) FROM revocation_batches")[0][0]

    def cleanup(self, now: dt.datetime | None = None) -> int:
        """The gateway's daily clean-up (RevocationListCleanUpService): batches whose
        expires has passed are marked deleted. Returns how many."""
        now = now or now_utc()
        expired = [
            b["batch_id"]
            for b in self.batches()
            if not b["deleted"] and parse_instant(b["expires"]) < now
        ]
        for bid in expired:
            self.mark_deleted(bid, now)
        return len(expired)

    # audit
    def audit(self, country: str, thumbprint: str | None, kind: str, description: str) -> None:
        self._x(
            "INSERT INTO audit_events (country, uploader_thumbprint, type, description, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (country, thumbprint, kind, description, now_utc().isoformat()),
        )

    def audit_events(self) -> list[dict[str, Any]]:
        rows = self._x(
            "SELECT country, uploader_thumbprint, type, description, at FROM audit_events ORDER BY id"
        )
        return [
            dict(
                zip(("country", "uploader_thumbprint", "type", "description", "at"), r, strict=True)
            )
            for r in rows
        ]

    def clear(self) -> None:
        """Forget every batch, DSC and audit event (tests and drills); trusted parties stay."""
        self._x("DELETE FROM revocation_batches")
        self._x("DELETE FROM signer_information")
        self._x("DELETE FROM audit_events")

    def close(self) -> None:
        with self._lock:
            self._db.close()
