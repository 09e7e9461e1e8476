"""clauses: stored receipts cite their own region's documents

Before benefits-engine 1.1 the clauses of the categories and measures were constants naming
封丘 or 南阳 whatever the household's region: a 秦皇岛 receipt's categories cited 封丘 and 南阳,
a 封丘 receipt's 低保金 cited 南阳. A receipt is read on an objection (异议), so its clauses are
rewritten from the basis (`basis.*`) in force for its region on its day in the shipped parameter
files, exactly as a card decided now cites them; each line's closing `依据…` follows its clause.
Results, inputs and parameters are untouched: re-derivation is unchanged.

Revision ID: benefits_0005
Revises: benefits_0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

from services.benefits.domain.parameters import (
    DEFAULT_DIRECTORY,
    Book,
    NoParameters,
    Resolved,
    load_book,
)

revision: str = "benefits_0005"
down_revision: str | None = "benefits_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_decision = sa.table(
    "decision", sa.column("id"), sa.column("region"), sa.column("as_of"), sa.column("body", sa.JSON)
)
_PAGE = 1_000  # receipts are kept for years: read them a page at a time
_NO_BASIS = "本地区文件未规定,亦无默认依据"


def upgrade() -> None:
    bind = op.get_bind()
    book = load_book(DEFAULT_DIRECTORY)
    after = ""
    while rows := bind.execute(
        sa.select(_decision.c.id, _decision.c.region, _decision.c.as_of, _decision.c.body)
        .where(_decision.c.id > after)
        .order_by(_decision.c.id)
        .limit(_PAGE)
    ).all():
        after = rows[-1][0]
        for decision_id, region, as_of, body in rows:
            try:
                resolved = book.resolve(region, date.fromisoformat(str(as_of)[:10]))
            except NoParameters:
                continue  # no file covers it any more: nothing to cite from
            rewritten = _rewrite(body, resolved, book)
            if rewritten != body:
                bind.execute(
                    sa.update(_decision).where(_decision.c.id == decision_id).values(body=rewritten)
                )


def _basis(resolved: Resolved, key: str, book: Book) -> tuple[str, str]:
    value = resolved.get(key)
    if value is None:
        return _NO_BASIS, _NO_BASIS
    return value.citation(book.names), value.grounds(book.names)


def _rewrite(body: dict[str, Any], resolved: Resolved, book: Book) -> dict[str, Any]:
    decisions = [
        {**d, "clause": _basis(resolved, f"basis.category.{d['category']}", book)[0]}
        for d in body["eligibility"]
    ]
    lines = []
    for line in body["measures"]:
        clause, grounds = _basis(resolved, f"basis.measure.{line['code']}", book)
        explanation = line["explanation"]
        former = f"依据{line['clause']}。"
        if explanation.endswith(former):
            explanation = explanation[: -len(former)] + f"{grounds}。"
        lines.append({**line, "clause": clause, "explanation": explanation})
    return {**body, "eligibility": decisions, "measures": lines}


def downgrade() -> None:
    pass  # the former clauses named other regions' documents: not worth restoring
