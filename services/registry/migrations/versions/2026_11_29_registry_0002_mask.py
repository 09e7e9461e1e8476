"""mask: stored masked numbers keep the region and the check character only

The former mask (first 6 and last 4) kept the 3-digit sequence, which with a birth date is
the number. The masked columns, the member lines of the history (`张*明 411302********123X`) and
the attached verification summaries (their discrepancies name members by masked number) are
rewritten from themselves: no key is needed.

Revision ID: registry_0002
Revises: registry_0001
Create Date: 2026-11-29
"""

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "registry_0002"
down_revision: str | None = "registry_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("member", "identity_masked"), ("household", "head_identity_masked"))
_FORMER = re.compile(r"(\d{6})\*{8}\d{3}([\dX])")
_history = sa.table(
    "history", sa.column("id", sa.Integer), sa.column("action"), sa.column("changes", sa.JSON)
)
_household = sa.table("household", sa.column("id"), sa.column("verification", sa.JSON))


def upgrade() -> None:
    for table, column in _COLUMNS:
        op.execute(
            f"UPDATE {table} SET {column} = "
            f"substr({column}, 1, 6) || '***********' || substr({column}, 18, 1) "
            f"WHERE length({column}) = 18"
        )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_history.c.id, _history.c.changes).where(
            _history.c.action.in_(("member_added", "member_removed"))
        )
    )
    for history_id, changes in rows.all():
        rewritten = _remask(changes)
        if rewritten != changes:
            bind.execute(
                sa.update(_history).where(_history.c.id == history_id).values(changes=rewritten)
            )
    summaries = bind.execute(
        sa.select(_household.c.id, _household.c.verification).where(
            _household.c.verification.is_not(None)
        )
    )
    for household_id, summary in summaries.all():
        rewritten = _remask(summary)
        if rewritten != summary:
            bind.execute(
                sa.update(_household)
                .where(_household.c.id == household_id)
                .values(verification=rewritten)
            )


def _remask(value: Any) -> Any:
    if isinstance(value, str):
        return _FORMER.sub(lambda m: m[1] + "*" * 11 + m[2], value)
    if isinstance(value, list):
        return [_remask(v) for v in value]
    if isinstance(value, dict):
        return {k: _remask(v) for k, v in value.items()}
    return value


def downgrade() -> None:
    pass  # the hidden digits are gone from these columns; the cipher still holds the number
