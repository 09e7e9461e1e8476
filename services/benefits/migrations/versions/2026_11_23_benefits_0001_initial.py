"""initial: the common tables (outbox, inbox, audit log)

Revision ID: benefits_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

from shared.migrations import create_common_tables, drop_common_tables

revision: str = "benefits_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_common_tables()


def downgrade() -> None:
    drop_common_tables()
