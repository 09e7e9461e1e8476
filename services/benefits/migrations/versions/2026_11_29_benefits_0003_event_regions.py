"""event regions: the region of a verified income and of an income month, from their events

Revision ID: benefits_0003
Revises: benefits_0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "benefits_0003"
down_revision: str | None = "benefits_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("verified_income", "income_month")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("region", sa.String(length=6), nullable=True))
        # Rows of a held household take its region; a row of one not held stays unknown.
        op.execute(
            f"UPDATE {table} SET region = (SELECT household_input.region FROM household_input "
            f"WHERE household_input.household_id = {table}.household_id)"
        )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("region")
