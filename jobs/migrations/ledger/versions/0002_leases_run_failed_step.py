"""Leases of running batch steps; the run-level step that stopped a run.

batches: lease_token, lease_node, lease_expires_at (jobs/ledger/leases.py) beside the
running_* columns they extend. runs: failed_step (jobs.flow.finish keeps such a run FAILED).
All nullable: rows written before this revision have no lease (a running step of theirs
counts as leased until running_since + lease_seconds) and no failed step.

Revision ID: ledger_0002
Revises: ledger_0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0002"
down_revision = "ledger_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("lease_token", sa.String(length=32), nullable=True))
    op.add_column("batches", sa.Column("lease_node", sa.String(length=64), nullable=True))
    op.add_column(
        "batches", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("runs", sa.Column("failed_step", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("failed_step")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_node")
        batch_op.drop_column("lease_token")
