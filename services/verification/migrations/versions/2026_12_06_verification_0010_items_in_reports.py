"""a report's items are read from the report: the table that copied them goes

Every report's body holds all its items (a version keeps the earlier one's that it did not
ask again), and the items table was only read to find the missing ones to ask again. Writing
its 44 rows a household was 0.6 ms of a single household's 67 over PostgreSQL.

Revision ID: verification_0010
Revises: verification_0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

revision: str = "verification_0010"
down_revision: str | None = "verification_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("verification_item")


def downgrade() -> None:
    """The table again, its rows made from each verification's latest report.

    What only the table had comes back from the query log where it can: the consent and the
    response's digest of the question with the item's request hash. The time an answer was
    fetched comes back as the report's."""
    items = op.create_table(
        "verification_item",
        sa.Column("verification_id", sa.String(length=36), nullable=False),
        sa.Column("member_id", sa.String(length=36), nullable=False),
        sa.Column("department", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("consent_id", sa.String(length=36), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("response_digest", sa.String(length=64), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "verification_id", "member_id", "department", name=op.f("pk_verification_item")
        ),
    )
    report = sa.table(
        "report",
        sa.column("verification_id", sa.String),
        sa.column("version", sa.Integer),
        sa.column("body", sa.JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    query = sa.table(
        "department_query",
        sa.column("verification_id", sa.String),
        sa.column("request_hash", sa.String),
        sa.column("consent_id", sa.String),
        sa.column("response_digest", sa.String),
    )
    bind = op.get_bind()
    latest = (
        sa.select(report.c.verification_id, sa.func.max(report.c.version).label("version"))
        .group_by(report.c.verification_id)
        .subquery()
    )
    reports = bind.execute(
        sa.select(report.c.verification_id, report.c.body, report.c.created_at).join(
            latest,
            sa.and_(
                latest.c.verification_id == report.c.verification_id,
                latest.c.version == report.c.version,
            ),
        )
    )
    for verification_id, body, created_at in reports:
        asked = {
            r.request_hash: r
            for r in bind.execute(
                sa.select(query).where(query.c.verification_id == verification_id)
            )
        }
        rows = []
        for item in body["report"]["items"]:
            question = asked.get(item["request_hash"])
            rows.append(
                {
                    "verification_id": verification_id,
                    "member_id": item["member_id"],
                    "department": item["department"],
                    "status": item["status"],
                    "source": item["source"],
                    "as_of": date.fromisoformat(item["as_of"]) if item["as_of"] else None,
                    "findings": item["findings"],
                    "reason": item["reason"],
                    "consent_id": question.consent_id if question else None,
                    "request_hash": item["request_hash"],
                    "response_digest": question.response_digest if question else None,
                    "fetched_at": created_at,
                }
            )
        if rows:
            op.bulk_insert(items, rows)
