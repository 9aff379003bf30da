"""Reporting tables: issuance, people reached, quarantine, deliveries, latency, runs.

Revision ID: reporting_0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

from jobs.reporting import ReportingBase

revision = "reporting_0001"
down_revision = None
branch_labels = ("reporting",)
depends_on = None


def upgrade() -> None:
    # The first revision creates the tables from the models as they stood at this revision;
    # later revisions use explicit op.* calls.
    ReportingBase.metadata.create_all(op.get_bind())


def downgrade() -> None:
    ReportingBase.metadata.drop_all(op.get_bind())
