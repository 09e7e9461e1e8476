"""the audit log's append function on PostgreSQL: a record appended in one round trip

Revision ID: registry_0004
Revises: registry_0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from shared.migrations import create_audit_append, drop_audit_append

revision: str = "registry_0004"
down_revision: str | None = "registry_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_append()


def downgrade() -> None:
    drop_audit_append()
