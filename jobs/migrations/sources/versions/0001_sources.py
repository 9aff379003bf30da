"""The source registers: population, NVR vaccinations, orders, NVR snapshots.

Revision ID: sources_0001
Revises:
Create Date: 2026-11-22
"""

from alembic import op

from jobs.sources import SourcesBase

revision = "sources_0001"
down_revision = None
branch_labels = ("sources",)
depends_on = None


def upgrade() -> None:
    # The first revision creates the tables from the models as they stood at this revision;
    # later revisions use explicit op.* calls.
    SourcesBase.metadata.create_all(op.get_bind())


def downgrade() -> None:
    SourcesBase.metadata.drop_all(op.get_bind())
