"""watched_person.household_id indexed: a report's write replaces its household's people

Revision ID: verification_0007
Revises: verification_0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "verification_0007"
down_revision: str | None = "verification_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("watched_person", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_watched_person_household_id"), ["household_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("watched_person", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_watched_person_household_id"))
