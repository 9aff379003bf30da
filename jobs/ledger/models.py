"""The issuance ledger: the single source of truth for what was issued and delivered.

Runs own batches; batches own certificates; certificates own delivery attempts. The
ledger keeps no identity data: persons appear only under their pseudonymous id (``pid``),
and certificates only by UVCI and a hash of the HC1. One certificate per order is enforced
by a unique constraint, not by code.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class LedgerBase(DeclarativeBase):
    pass


class RunState(enum.StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class BatchState(enum.StrEnum):
    PLANNED = "PLANNED"
    SIGNED = "SIGNED"
    RENDERED = "RENDERED"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class Outcome(enum.StrEnum):
    """The one final state every certificate ends in."""

    DIGITAL = "DIGITAL"  # delivered to a digital mailbox
    PAPER = "PAPER"  # queued for the print house
    DEFERRED = "DEFERRED"  # to be tried in a later run (reason recorded)
    WITHDRAWN = "WITHDRAWN"  # consent lapsed after signing: never delivered nor printed


class DeliveryStatus(enum.StrEnum):
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"  # this attempt failed; another may follow
    DEFERRED = "DEFERRED"
    QUEUED_PAPER = "QUEUED_PAPER"
    UNREACHABLE = "UNREACHABLE"
    # written before a request leaves (write-ahead), settled after: a row still SENDING
    # after a crash means the operator may have the message
    SENDING = "SENDING"
    REFUSED = "REFUSED"  # refused before processing (auth, 4xx, 429/503): not at the operator


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    return Enum(cls, name=name, native_enum=False, length=16, validate_strings=True)


class Run(LedgerBase):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[RunState] = mapped_column(_enum(RunState, "run_state"), default=RunState.RUNNING)
    parameters: Mapped[dict] = mapped_column(JSON, default=dict)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    step_seconds: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    # The run-level step that stopped the run (extract, a data-quality gate, ...): such a run
    # stays FAILED, whatever its batches do (jobs.flow.finish).
    failed_step: Mapped[str | None] = mapped_column(String(32))

    batches: Mapped[list[Batch]] = relationship(back_populates="run", order_by="Batch.seq")


class Batch(LedgerBase):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)  # f"{run_id}-b{seq:04d}"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    state: Mapped[BatchState] = mapped_column(
        _enum(BatchState, "batch_state"), default=BatchState.PLANNED, index=True
    )
    failed_step: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    planned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rendered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    step_seconds: Mapped[dict] = mapped_column(JSON, default=dict)
    # Who is working on the batch right now (cleared when the step ends, however it ends).
    # A row still holding a step whose process is gone was killed mid-step (SIGKILL, OOM).
    running_step: Mapped[str | None] = mapped_column(String(16))
    running_host: Mapped[str | None] = mapped_column(String(128))
    running_pid: Mapped[int | None] = mapped_column(Integer)
    running_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The holder's lease (jobs/ledger/leases.py): its token, the pid namespace its pid means
    # something in, and until when it holds the step unless its heartbeat extends it.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_node: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    run: Mapped[Run] = relationship(back_populates="batches")

    __table_args__ = (Index("uq_batches_run_seq", "run_id", "seq", unique=True),)


class Certificate(LedgerBase):
    __tablename__ = "certificates"

    uvci: Mapped[str] = mapped_column(String(80), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)  # one certificate per order
    pid: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id"), index=True)
    cert_type: Mapped[str] = mapped_column(String(1), default="v")  # v, t, r
    kid: Mapped[str] = mapped_column(String(16))  # base64 of the 8-byte kid
    iat: Mapped[int] = mapped_column(BigInteger)
    exp: Mapped[int] = mapped_column(BigInteger)
    hc1_sha256: Mapped[str] = mapped_column(String(64))
    # Non-identifying dimensions for reporting (no names, no dates of birth, no id numbers)
    county: Mapped[str | None] = mapped_column(String(2))
    age_band: Mapped[str | None] = mapped_column(String(8))
    product: Mapped[str | None] = mapped_column(String(32))
    dn: Mapped[int | None] = mapped_column(SmallInteger)
    sd: Mapped[int | None] = mapped_column(SmallInteger)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    outcome: Mapped[Outcome | None] = mapped_column(_enum(Outcome, "outcome"), index=True)
    outcome_reason: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the gateway's revocation hashes need, kept at signing (signing.revocation): the
    # issuing country (CWT iss) and the three hashes, base64 of 16 bytes each. NULL for
    # certificates signed before ledger_0003.
    issuer_country: Mapped[str | None] = mapped_column(String(2))
    hash_uci: Mapped[str | None] = mapped_column(String(24))
    hash_countrycodeuci: Mapped[str | None] = mapped_column(String(24))
    hash_signature: Mapped[str | None] = mapped_column(String(24))

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="certificate", order_by="Delivery.id"
    )


class Delivery(LedgerBase):
    """One attempt to deliver one certificate (digital or paper)."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uvci: Mapped[str] = mapped_column(ForeignKey("certificates.uvci"), index=True)
    batch_id: Mapped[str] = mapped_column(String(96), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))  # digital | paper
    operator: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus, "delivery_status"))
    idempotency_key: Mapped[str | None] = mapped_column(String(96))
    receipt: Mapped[str | None] = mapped_column(String(128))
    http_status: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float | None]
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    certificate: Mapped[Certificate] = relationship(back_populates="deliveries")


class QuarantineEntry(LedgerBase):
    """A record held back from issuance, with the reason. Never identity data: pid and
    order id only."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(16))  # validate | map | sign | ...
    suite: Mapped[str | None] = mapped_column(String(64))
    expectation: Mapped[str | None] = mapped_column(String(128))
    reason_code: Mapped[str] = mapped_column(String(64), index=True)
    pid: Mapped[str | None] = mapped_column(String(64), index=True)
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index(
            "uq_quarantine_entry",
            "run_id",
            "step",
            "reason_code",
            "order_id",
            "event_id",
            unique=True,
        ),
    )


class RevocationReason(enum.StrEnum):
    """Why an operator revoked a certificate (``bevis certificates revoke --reason``)."""

    wrong_person = "wrong_person"
    wrong_result = "wrong_result"
    wrong_data = "wrong_data"
    withdrawn_consent = "withdrawn_consent"
    superseded = "superseded"
    key_compromise = "key_compromise"


class Revocation(LedgerBase):
    """A certificate revoked: why, by whom, when. Never deleted, one per certificate
    (revoking again changes nothing). Sets ``certificates.revoked_at`` in the same
    transaction."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uvci: Mapped[str] = mapped_column(ForeignKey("certificates.uvci"), unique=True)
    reason: Mapped[RevocationReason] = mapped_column(
        Enum(
            RevocationReason,
            name="revocation_reason",
            native_enum=False,
            length=24,
            validate_strings=True,
        )
    )
    note: Mapped[str | None] = mapped_column(String(500))
    who: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevocationBatch(LedgerBase):
    """One revocation batch for the EU gateway: the revoked certificates of one kid under
    one hash type (at most 1000), as exported and uploaded. ``id`` names the files
    (``<id>.json``, ``<id>.cms``); ``batch_id`` is the gateway's, from its answer to the
    upload. ``upload_started_at`` is written before the request leaves: a batch holding it
    without a ``batch_id`` may be at the gateway, and is looked for there before a rerun
    uploads it again."""

    __tablename__ = "revocation_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    country: Mapped[str] = mapped_column(String(2))
    kid: Mapped[str] = mapped_column(String(12), index=True)
    hash_type: Mapped[str] = mapped_column(String(16))
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    entries: Mapped[int] = mapped_column(Integer)
    entries_sha256: Mapped[str] = mapped_column(String(64))  # of the batch JSON (the DTO)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    upload_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RevocationBatchEntry(LedgerBase):
    """Which revoked certificate is in which batch: a certificate enters one batch per hash
    type, once (the unique key), so a rerun of the export plans nothing twice."""

    __tablename__ = "revocation_batch_entries"

    batch: Mapped[str] = mapped_column(ForeignKey("revocation_batches.id"), primary_key=True)
    uvci: Mapped[str] = mapped_column(ForeignKey("certificates.uvci"), primary_key=True)
    hash_type: Mapped[str] = mapped_column(String(16))

    __table_args__ = (
        Index("uq_revocation_batch_entries_type_uvci", "hash_type", "uvci", unique=True),
    )
