"""The issuance ledger: runs, batches, certificates, deliveries, quarantine.

Revision ID: ledger_0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

from jobs.ledger import LedgerBase

revision = "ledger_0001"
down_revision = None
branch_labels = ("ledger",)
depends_on = None


def upgrade() -> None:
    # The first revision creates the tables from the models as they stood at this revision;
    # later revisions use explicit op.* calls.
    LedgerBase.metadata.create_all(op.get_bind())


def downgrade() -> None:
    LedgerBase.metadata.drop_all(op.get_bind())
