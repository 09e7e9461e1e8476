"""initial: common tables and the household intake

Revision ID: registry_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.migrations import create_common_tables, drop_common_tables

revision: str = "registry_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_common_tables()
    op.create_table(
        "household",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("region", sa.String(6), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("head_name", sa.String(50), nullable=False),
        sa.Column("head_identity_cipher", sa.Text(), nullable=False),
        sa.Column("head_identity_index", sa.String(128), nullable=False),
        sa.Column("head_identity_masked", sa.String(18), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_household"),
    )
    op.create_index("ix_household_region", "household", ["region"])
    op.create_index("ix_household_head_identity_index", "household", ["head_identity_index"])


def downgrade() -> None:
    op.drop_table("household")
    drop_common_tables()
