"""consent.revoked_at: when a revocation was entered

A revocation ends every consent of the person signed before its day, in any region; for a
consent signed on that same day, the order of entry decides, so the revocation keeps its time.

Revision ID: verification_0004
Revises: verification_0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "verification_0004"
down_revision: str | None = "verification_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consent", schema=None) as batch_op:
        batch_op.drop_column("revoked_at")
