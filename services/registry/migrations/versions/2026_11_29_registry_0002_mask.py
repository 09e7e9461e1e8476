"""mask: stored masked numbers keep the region and the check character only

The former mask (first 6 and last 4) kept the 3-digit sequence, which with a birth date is
the number; the masked columns are rewritten from themselves (no key is needed).

Revision ID: registry_0002
Revises: registry_0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "registry_0002"
down_revision: str | None = "registry_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("member", "identity_masked"), ("household", "head_identity_masked"))


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = "
            f"substr({column}, 1, 6) || '***********' || substr({column}, 18, 1) "
            f"WHERE length({column}) = 18"
        )


def downgrade() -> None:
    pass  # the hidden digits are gone from these columns; the cipher still holds the number
