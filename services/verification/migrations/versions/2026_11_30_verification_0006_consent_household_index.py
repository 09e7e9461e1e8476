"""consent.household_id indexed: the consents of a household are listed on its file

Revision ID: verification_0006
Revises: verification_0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "verification_0006"
down_revision: str | None = "verification_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_household_id"), ["household_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_household_id"))
