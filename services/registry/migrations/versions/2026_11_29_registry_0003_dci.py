"""dci: the DCI social registry API's transactions, subscriptions and deliveries

Async searches and txn status answer from `dci_transaction` after a restart; callbacks and
notifications wait in `dci_delivery` until delivered or dead.

Revision ID: registry_0003
Revises: registry_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "registry_0003"
down_revision: str | None = "registry_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dci_transaction",
        sa.Column("correlation_id", sa.String(length=36), nullable=False),
        sa.Column("transaction_id", sa.String(length=99), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("sender_id", sa.String(length=200), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reference_ids", sa.JSON(), nullable=False),
        sa.Column("reply", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("correlation_id", name=op.f("pk_dci_transaction")),
    )
    op.create_index(
        "ix_dci_transaction_client_transaction",
        "dci_transaction",
        ["client_id", "transaction_id"],
        unique=False,
    )
    op.create_table(
        "dci_subscription",
        sa.Column("code", sa.String(length=99), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("sender_id", sa.String(length=200), nullable=False),
        sa.Column("sender_uri", sa.String(length=2000), nullable=True),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("filter_type", sa.String(length=20), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("record_type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_dci_subscription")),
    )
    op.create_index("ix_dci_subscription_status", "dci_subscription", ["status"], unique=False)
    op.create_table(
        "dci_delivery",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ordering_key", sa.String(length=120), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dci_delivery")),
    )
    op.create_index(
        "ix_dci_delivery_status_key",
        "dci_delivery",
        ["status", "ordering_key", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_dci_delivery_status_key", table_name="dci_delivery")
    op.drop_table("dci_delivery")
    op.drop_index("ix_dci_subscription_status", table_name="dci_subscription")
    op.drop_table("dci_subscription")
    op.drop_index("ix_dci_transaction_client_transaction", table_name="dci_transaction")
    op.drop_table("dci_transaction")
