"""the audit log's append that fails its statement if the head moved: a change and its
records in one round trip on PostgreSQL

Revision ID: notifications_0005
Revises: notifications_0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from shared.migrations import create_audit_append_or_fail, drop_audit_append_or_fail

revision: str = "notifications_0005"
down_revision: str | None = "notifications_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_append_or_fail()


def downgrade() -> None:
    drop_audit_append_or_fail()
