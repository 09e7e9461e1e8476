"""mask: stored masked numbers keep the region and the check character only

As `shared.identity` masks them now (registry_0002 did the same for the registry): a consent
keeps the number masked as it was when recorded, and each stored report lists its members'
masked numbers. Both are rewritten from themselves (no key is needed). A report's content
hash covers its `report` part, which holds no number, so every hash stays valid.

Revision ID: verification_0005
Revises: verification_0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "verification_0005"
down_revision: str | None = "verification_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAGE = 500
_report = sa.table(
    "report",
    sa.column("verification_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("body", sa.JSON),
)


def _remasked(masked: str) -> str:
    """411302********123X (first 6 and last 4) -> 411302***********X; any other kept."""
    if len(masked) == 18 and masked[6:14] == "*" * 8 and "*" not in masked[14:]:
        return masked[:6] + "*" * 11 + masked[17]
    return masked


def _with_members_remasked(body: dict[str, Any]) -> dict[str, Any]:
    members = [{**m, "identity_number": _remasked(m["identity_number"])} for m in body["members"]]
    return {**body, "members": members}


def upgrade() -> None:
    op.execute(
        "UPDATE consent SET identity_masked = "
        "substr(identity_masked, 1, 6) || '***********' || substr(identity_masked, 18, 1) "
        "WHERE length(identity_masked) = 18 AND substr(identity_masked, 7, 8) = '********' "
        "AND substr(identity_masked, 15, 1) <> '*'"
    )
    bind = op.get_bind()
    after: tuple[str, int] = ("", 0)
    key = sa.tuple_(_report.c.verification_id, _report.c.version)
    while True:  # a page at a time: the reports of a county do not fit in memory at once
        rows = bind.execute(
            sa.select(_report.c.verification_id, _report.c.version, _report.c.body)
            .where(key > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
            .order_by(_report.c.verification_id, _report.c.version)
            .limit(_PAGE)
        ).all()
        for verification_id, version, body in rows:
            remasked = _with_members_remasked(body)
            if remasked != body:
                bind.execute(
                    sa.update(_report)
                    .where(_report.c.verification_id == verification_id)
                    .where(_report.c.version == version)
                    .values(body=remasked)
                )
        if len(rows) < _PAGE:
            return
        after = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    """The hidden digits are gone from the stored masks: nothing to restore."""
