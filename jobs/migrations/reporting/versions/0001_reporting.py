"""Reporting tables: issuance, people reached, quarantine, deliveries, latency, runs.

Revision ID: reporting_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "reporting_0001"
down_revision = None
branch_labels = ("reporting",)
depends_on = None


def upgrade() -> None:
    # Explicit operations: the schema as it stood at this revision, independent of
    # the models (which later revisions change).
    op.create_table(
        "rpt_delivery",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("latency_n", sa.Integer(), nullable=False),
        sa.Column("latency_p50_ms", sa.Float(), nullable=True),
        sa.Column("latency_p90_ms", sa.Float(), nullable=True),
        sa.Column("latency_p99_ms", sa.Float(), nullable=True),
        sa.Column("latency_max_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rpt_delivery_day"), "rpt_delivery", ["day"], unique=False)
    op.create_table(
        "rpt_issuance",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("county", sa.String(length=2), nullable=True),
        sa.Column("age_band", sa.String(length=8), nullable=True),
        sa.Column("cert_type", sa.String(length=1), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=True),
        sa.Column("dn", sa.SmallInteger(), nullable=True),
        sa.Column("sd", sa.SmallInteger(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=True),
        sa.Column("certificates", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rpt_issuance_day"), "rpt_issuance", ["day"], unique=False)
    op.create_table(
        "rpt_latency_hist",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("le_ms", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rpt_latency_hist_day"), "rpt_latency_hist", ["day"], unique=False)
    op.create_table(
        "rpt_people",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("new_persons", sa.Integer(), nullable=False),
        sa.Column("new_persons_digital", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "rpt_quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_rpt_quarantine_day"), "rpt_quarantine", ["day"], unique=False)
    op.create_table(
        "rpt_refresh",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("certificates", sa.Integer(), nullable=False),
        sa.Column("persons", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("quarantine", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rpt_run_steps",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("certificates_per_second", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "step"),
    )
    op.create_table(
        "rpt_runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("certificates", sa.Integer(), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=True),
        sa.Column("certificates_per_second", sa.Float(), nullable=True),
        sa.Column("step_seconds", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index(op.f("ix_rpt_runs_day"), "rpt_runs", ["day"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_rpt_runs_day"), table_name="rpt_runs")
    op.drop_table("rpt_runs")
    op.drop_table("rpt_run_steps")
    op.drop_table("rpt_refresh")
    op.drop_index(op.f("ix_rpt_quarantine_day"), table_name="rpt_quarantine")
    op.drop_table("rpt_quarantine")
    op.drop_table("rpt_people")
    op.drop_index(op.f("ix_rpt_latency_hist_day"), table_name="rpt_latency_hist")
    op.drop_table("rpt_latency_hist")
    op.drop_index(op.f("ix_rpt_issuance_day"), table_name="rpt_issuance")
    op.drop_table("rpt_issuance")
    op.drop_index(op.f("ix_rpt_delivery_day"), table_name="rpt_delivery")
    op.drop_table("rpt_delivery")
