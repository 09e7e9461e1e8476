"""ages: the explanations of stored receipts state age thresholds, not ages

An age beside the decision's date narrows a member's birth date, and with the masked identity
number (region and check character) and the birth year a masked file shows, a few dated
decisions left few numbers to try. The former texts are rewritten from themselves: a schooling
line (`成员3:16岁,初中第3学年,寄宿`) loses its age; a line of an old-age measure
(`成员5:76岁`), which listed only the members of 60 or more, says that (`成员5:年满60周岁`). The
inputs keep the birth dates, for re-derivation; the API answers them as years.

Revision ID: benefits_0004
Revises: benefits_0003
Create Date: 2026-11-29
"""

import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "benefits_0004"
down_revision: str | None = "benefits_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCHOOLING_AGE = re.compile(r"成员(\d+):\d+岁,")
_OLD_AGE = re.compile(r"成员(\d+):\d+岁(?=[;。])")
_decision = sa.table("decision", sa.column("id"), sa.column("body", sa.JSON))
_PAGE = 1_000  # receipts are kept for years: read them a page at a time


def upgrade() -> None:
    bind = op.get_bind()
    after = ""
    while rows := bind.execute(
        sa.select(_decision.c.id, _decision.c.body)
        .where(_decision.c.id > after)
        .order_by(_decision.c.id)
        .limit(_PAGE)
    ).all():
        after = rows[-1][0]
        for decision_id, body in rows:
            _rewrite(bind, decision_id, body)


def _rewrite(bind: sa.Connection, decision_id: str, body: dict[str, Any]) -> None:
    measures = [{**m, "explanation": _without_ages(m["explanation"])} for m in body["measures"]]
    if measures != body["measures"]:
        bind.execute(
            sa.update(_decision)
            .where(_decision.c.id == decision_id)
            .values(body={**body, "measures": measures})
        )


def _without_ages(text: str) -> str:
    return _OLD_AGE.sub(r"成员\1:年满60周岁", _SCHOOLING_AGE.sub(r"成员\1:", text))


def downgrade() -> None:
    pass  # the ages are gone from the texts; the inputs still hold the birth dates
