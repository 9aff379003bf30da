"""The source registers: population, NVR vaccinations, orders, NVR snapshots.

Revision ID: sources_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "sources_0001"
down_revision = None
branch_labels = ("sources",)
depends_on = None


def upgrade() -> None:
    # Explicit operations: the schema as it stood at this revision, independent of
    # the models (which later revisions change).
    op.create_table(
        "nvr_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("persons", sa.Integer(), nullable=True),
        sa.Column("events", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "nvr_vaccinations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("person_id", sa.String(length=13), nullable=False),
        sa.Column("vaccination_date", sa.Date(), nullable=False),
        sa.Column("vaccine", sa.String(length=80), nullable=False),
        sa.Column("batch_number", sa.String(length=40), nullable=True),
        sa.Column("dose_number", sa.SmallInteger(), nullable=True),
        sa.Column("care_provider", sa.String(length=120), nullable=True),
        sa.Column("care_provider_org", sa.String(length=11), nullable=True),
        sa.Column("county_code", sa.String(length=2), nullable=True),
        sa.Column("municipality_code", sa.String(length=4), nullable=True),
        sa.Column("reporting_system", sa.String(length=20), nullable=False),
        sa.Column("reporting_ref", sa.String(length=40), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reporting_system", "reporting_ref", name="uq_nvr_report"),
    )
    op.create_index("ix_nvr_person", "nvr_vaccinations", ["person_id"], unique=False)
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=24), nullable=False),
        sa.Column("person_id", sa.String(length=13), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consent_withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cert_type", sa.String(length=1), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("claimed_by_run", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("cert_type IN ('v', 't', 'r')", name="ck_orders_cert_type"),
        sa.CheckConstraint(
            "state IN ('PENDING', 'CLAIMED', 'FULFILLED', 'DUPLICATE')", name="ck_orders_state"
        ),
        sa.PrimaryKeyConstraint("order_id"),
    )
    op.create_index("ix_orders_claim", "orders", ["claimed_by_run", "person_id"], unique=False)
    op.create_index("ix_orders_state_requested", "orders", ["state", "requested_at"], unique=False)
    op.create_index("ix_orders_person", "orders", ["person_id"], unique=False)
    op.create_table(
        "population",
        sa.Column("person_id", sa.String(length=13), nullable=False),
        sa.Column("given_name", sa.String(length=200), nullable=True),
        sa.Column("family_name", sa.String(length=200), nullable=True),
        sa.Column("dob", sa.String(length=10), nullable=True),
        sa.Column("address_street", sa.String(length=120), nullable=True),
        sa.Column("address_postcode", sa.String(length=10), nullable=True),
        sa.Column("address_city", sa.String(length=60), nullable=True),
        sa.Column("protected_identity", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("person_id"),
    )


def downgrade() -> None:
    op.drop_table("population")
    op.drop_index("ix_orders_person", table_name="orders")
    op.drop_index("ix_orders_state_requested", table_name="orders")
    op.drop_index("ix_orders_claim", table_name="orders")
    op.drop_table("orders")
    op.drop_index("ix_nvr_person", table_name="nvr_vaccinations")
    op.drop_table("nvr_vaccinations")
    op.drop_table("nvr_snapshots")
