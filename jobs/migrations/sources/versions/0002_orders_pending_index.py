"""Orders: a partial index on pending orders replaces the (state, requested_at) index.

The claim only searches PENDING orders; the partial index halves the cost of a claim on
SQLite and stays small as orders are fulfilled.

Revision ID: sources_0002
Revises: sources_0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "sources_0002"
down_revision = "sources_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF [NOT] EXISTS: databases created before revision 0001 was written out as explicit
    # operations got their tables from the models, with the new index and without the old.
    op.execute("DROP INDEX IF EXISTS ix_orders_state_requested")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_orders_pending ON orders (requested_at, order_id)"
        " WHERE state = 'PENDING'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_orders_pending")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_orders_state_requested ON orders (state, requested_at)"
    )
