"""Revocation: who revoked which certificate and why; the revocation batches for the EU
gateway and their entries; the revocation hashes on each certificate.

certificates: issuer_country, hash_uci, hash_countrycodeuci, hash_signature (signing.revocation,
written by the sign step; NULL for certificates signed before this revision).
revocations: one row per revoked certificate, never deleted. revocation_batches: one per
kid and hash type (<= 1000 entries), with the gateway's batch id once uploaded.
revocation_batch_entries: which certificate is in which batch (once per hash type).

Revision ID: ledger_0003
Revises: ledger_0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0003"
down_revision = "ledger_0002"
branch_labels = None
depends_on = None

REASONS = (
    "wrong_person",
    "wrong_result",
    "wrong_data",
    "withdrawn_consent",
    "superseded",
    "key_compromise",
)


def upgrade() -> None:
    op.add_column("certificates", sa.Column("issuer_country", sa.String(length=2), nullable=True))
    op.add_column("certificates", sa.Column("hash_uci", sa.String(length=24), nullable=True))
    op.add_column(
        "certificates", sa.Column("hash_countrycodeuci", sa.String(length=24), nullable=True)
    )
    op.add_column("certificates", sa.Column("hash_signature", sa.String(length=24), nullable=True))
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uvci", sa.String(length=80), nullable=False),
        sa.Column(
            "reason",
            sa.Enum(*REASONS, name="revocation_reason", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("who", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["uvci"], ["certificates.uvci"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uvci"),
    )
    op.create_table(
        "revocation_batches",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=36), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("kid", sa.String(length=12), nullable=False),
        sa.Column("hash_type", sa.String(length=16), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("entries_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("upload_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_index(op.f("ix_revocation_batches_kid"), "revocation_batches", ["kid"], unique=False)
    op.create_table(
        "revocation_batch_entries",
        sa.Column("batch", sa.String(length=64), nullable=False),
        sa.Column("uvci", sa.String(length=80), nullable=False),
        sa.Column("hash_type", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["batch"], ["revocation_batches.id"]),
        sa.ForeignKeyConstraint(["uvci"], ["certificates.uvci"]),
        sa.PrimaryKeyConstraint("batch", "uvci"),
    )
    op.create_index(
        "uq_revocation_batch_entries_type_uvci",
        "revocation_batch_entries",
        ["hash_type", "uvci"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_revocation_batch_entries_type_uvci", table_name="revocation_batch_entries")
    op.drop_table("revocation_batch_entries")
    op.drop_index(op.f("ix_revocation_batches_kid"), table_name="revocation_batches")
    op.drop_table("revocation_batches")
    op.drop_table("revocations")
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_column("hash_signature")
        batch_op.drop_column("hash_countrycodeuci")
        batch_op.drop_column("hash_uci")
        batch_op.drop_column("issuer_country")
