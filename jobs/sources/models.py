"""The source registers as the agencies expose them: NVR vaccination events, certificate
orders from the ordering e-service, and the population register.

These tables are read by the extract (and written by the generator for local work and
tests); bevis itself only ever changes the order ``state`` columns. Names and birth dates
come from the population register, never from the NVR.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Order states. PENDING -> CLAIMED (by one run) -> FULFILLED, or back to PENDING by release.
# DUPLICATE: a second pending order of the same person and certificate type claimed in the
# same run; it is answered by the first order and not extracted again.
PENDING, CLAIMED, FULFILLED, DUPLICATE = "PENDING", "CLAIMED", "FULFILLED", "DUPLICATE"
ORDER_STATES = (PENDING, CLAIMED, FULFILLED, DUPLICATE)
CERT_TYPES = ("v", "t", "r")

TABLES = ("population", "nvr_vaccinations", "orders", "nvr_snapshots")


class SourcesBase(DeclarativeBase):
    """Metadata of the sources database (separate from the ledger's)."""


class Instant(TypeDecorator):
    """A timestamp of the sources database: an aware datetime (or ISO 8601 text with its
    offset) in, an aware UTC datetime out; naive values and epoch numbers are refused
    (jobs.errors.InvalidInstant). Stored as UTC — on SQLite in the one text form
    'YYYY-MM-DD HH:MM:SS.ffffff' (jobs.sources.consent), in which text order is time order;
    plain ``DateTime`` would store an aware datetime's wall-clock time there, offset lost."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        from jobs.sources.consent import instant

        t = instant(value)
        return t.replace(tzinfo=None) if dialect.name == "sqlite" else t

    def process_result_value(self, value, dialect):
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=dt.UTC)


class Person(SourcesBase):
    """A row of the population register (folkbokföringen): names, birth date, address."""

    __tablename__ = "population"

    person_id: Mapped[str] = mapped_column(String(13), primary_key=True)
    given_name: Mapped[str | None] = mapped_column(String(200))
    family_name: Mapped[str | None] = mapped_column(String(200))
    dob: Mapped[str | None] = mapped_column(String(10))  # YYYY-MM-DD, YYYY-MM or YYYY
    address_street: Mapped[str | None] = mapped_column(String(120))
    address_postcode: Mapped[str | None] = mapped_column(String(10))
    address_city: Mapped[str | None] = mapped_column(String(60))
    protected_identity: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)


class Vaccination(SourcesBase):
    """One vaccination event as reported to the NVR by a care provider's system."""

    __tablename__ = "nvr_vaccinations"
    __table_args__ = (
        UniqueConstraint("reporting_system", "reporting_ref", name="uq_nvr_report"),
        Index("ix_nvr_person", "person_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(13), nullable=False)
    vaccination_date: Mapped[dt.date] = mapped_column(Date, nullable=False)
    vaccine: Mapped[str] = mapped_column(String(80), nullable=False)  # product name or NPL-id
    batch_number: Mapped[str | None] = mapped_column(String(40))
    dose_number: Mapped[int | None] = mapped_column(SmallInteger)
    care_provider: Mapped[str | None] = mapped_column(String(120))
    care_provider_org: Mapped[str | None] = mapped_column(String(11))  # organisationsnummer
    county_code: Mapped[str | None] = mapped_column(String(2))
    municipality_code: Mapped[str | None] = mapped_column(String(4))
    reporting_system: Mapped[str] = mapped_column(String(20), nullable=False)
    reporting_ref: Mapped[str] = mapped_column(String(40), nullable=False)
    reported_at: Mapped[dt.datetime] = mapped_column(Instant(), nullable=False)


class Order(SourcesBase):
    """A certificate order from the e-service, with the person's consent to the transfer of
    NVR data. Only bevis's claim columns change after the order is placed."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("cert_type IN ('v', 't', 'r')", name="ck_orders_cert_type"),
        CheckConstraint(
            "state IN ('PENDING', 'CLAIMED', 'FULFILLED', 'DUPLICATE')", name="ck_orders_state"
        ),
        # Only pending orders are searched by the claim; a partial index stays small as
        # orders get fulfilled and costs one index write per claimed order, not two.
        Index(
            "ix_orders_pending",
            "requested_at",
            "order_id",
            sqlite_where=text("state = 'PENDING'"),
            postgresql_where=text("state = 'PENDING'"),
        ),
        Index("ix_orders_claim", "claimed_by_run", "person_id"),
        Index("ix_orders_person", "person_id"),
    )

    order_id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(13), nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(Instant(), nullable=False)
    consent_at: Mapped[dt.datetime | None] = mapped_column(Instant())
    consent_withdrawn_at: Mapped[dt.datetime | None] = mapped_column(Instant())
    cert_type: Mapped[str] = mapped_column(String(1), nullable=False, default="v")
    state: Mapped[str] = mapped_column(String(10), nullable=False, default=PENDING)
    claimed_by_run: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(Instant())
    fulfilled_at: Mapped[dt.datetime | None] = mapped_column(Instant())


class NvrSnapshot(SourcesBase):
    """When the NVR copy we read was taken (the data-quality freshness check reads it)."""

    __tablename__ = "nvr_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    taken_at: Mapped[dt.datetime] = mapped_column(Instant(), nullable=False)
    persons: Mapped[int | None] = mapped_column(Integer)
    events: Mapped[int | None] = mapped_column(Integer)
