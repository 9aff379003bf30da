"""The issuance ledger: runs, batches, certificates, deliveries, quarantine.

Revision ID: ledger_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0001"
down_revision = None
branch_labels = ("ledger",)
depends_on = None


def upgrade() -> None:
    # Explicit operations: the schema as it stood at this revision, independent of
    # the models (which later revisions change).
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("suite", sa.String(length=64), nullable=True),
        sa.Column("expectation", sa.String(length=128), nullable=True),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("pid", sa.String(length=64), nullable=True),
        sa.Column("order_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_quarantine_order_id"), "quarantine", ["order_id"], unique=False)
    op.create_index(op.f("ix_quarantine_pid"), "quarantine", ["pid"], unique=False)
    op.create_index(op.f("ix_quarantine_reason_code"), "quarantine", ["reason_code"], unique=False)
    op.create_index(op.f("ix_quarantine_run_id"), "quarantine", ["run_id"], unique=False)
    op.create_index(
        "uq_quarantine_entry",
        "quarantine",
        ["run_id", "step", "reason_code", "order_id", "event_id"],
        unique=True,
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "RUNNING", "SUCCEEDED", "FAILED", name="run_state", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("step_seconds", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "PLANNED",
                "SIGNED",
                "RENDERED",
                "DELIVERED",
                "FAILED",
                name="batch_state",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("failed_step", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("step_seconds", sa.JSON(), nullable=False),
        sa.Column("running_step", sa.String(length=16), nullable=True),
        sa.Column("running_host", sa.String(length=128), nullable=True),
        sa.Column("running_pid", sa.Integer(), nullable=True),
        sa.Column("running_since", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_batches_run_id"), "batches", ["run_id"], unique=False)
    op.create_index(op.f("ix_batches_state"), "batches", ["state"], unique=False)
    op.create_index("uq_batches_run_seq", "batches", ["run_id", "seq"], unique=True)
    op.create_table(
        "certificates",
        sa.Column("uvci", sa.String(length=80), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("pid", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("batch_id", sa.String(length=96), nullable=False),
        sa.Column("cert_type", sa.String(length=1), nullable=False),
        sa.Column("kid", sa.String(length=16), nullable=False),
        sa.Column("iat", sa.BigInteger(), nullable=False),
        sa.Column("exp", sa.BigInteger(), nullable=False),
        sa.Column("hc1_sha256", sa.String(length=64), nullable=False),
        sa.Column("county", sa.String(length=2), nullable=True),
        sa.Column("age_band", sa.String(length=8), nullable=True),
        sa.Column("product", sa.String(length=32), nullable=True),
        sa.Column("dn", sa.SmallInteger(), nullable=True),
        sa.Column("sd", sa.SmallInteger(), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum("DIGITAL", "PAPER", "DEFERRED", name="outcome", native_enum=False, length=16),
            nullable=True,
        ),
        sa.Column("outcome_reason", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
        ),
        sa.PrimaryKeyConstraint("uvci"),
        sa.UniqueConstraint("order_id"),
    )
    op.create_index(op.f("ix_certificates_batch_id"), "certificates", ["batch_id"], unique=False)
    op.create_index(op.f("ix_certificates_outcome"), "certificates", ["outcome"], unique=False)
    op.create_index(op.f("ix_certificates_pid"), "certificates", ["pid"], unique=False)
    op.create_index(op.f("ix_certificates_run_id"), "certificates", ["run_id"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uvci", sa.String(length=80), nullable=False),
        sa.Column("batch_id", sa.String(length=96), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "DELIVERED",
                "FAILED",
                "DEFERRED",
                "QUEUED_PAPER",
                "UNREACHABLE",
                name="delivery_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(length=96), nullable=True),
        sa.Column("receipt", sa.String(length=128), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["uvci"],
            ["certificates.uvci"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_deliveries_batch_id"), "deliveries", ["batch_id"], unique=False)
    op.create_index(op.f("ix_deliveries_uvci"), "deliveries", ["uvci"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_uvci"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_batch_id"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_certificates_run_id"), table_name="certificates")
    op.drop_index(op.f("ix_certificates_pid"), table_name="certificates")
    op.drop_index(op.f("ix_certificates_outcome"), table_name="certificates")
    op.drop_index(op.f("ix_certificates_batch_id"), table_name="certificates")
    op.drop_table("certificates")
    op.drop_index("uq_batches_run_seq", table_name="batches")
    op.drop_index(op.f("ix_batches_state"), table_name="batches")
    op.drop_index(op.f("ix_batches_run_id"), table_name="batches")
    op.drop_table("batches")
    op.drop_table("runs")
    op.drop_index("uq_quarantine_entry", table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_run_id"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_reason_code"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_pid"), table_name="quarantine")
    op.drop_index(op.f("ix_quarantine_order_id"), table_name="quarantine")
    op.drop_table("quarantine")
