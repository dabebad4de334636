"""Rejected uploads expire: the maintenance loop finds them by status and age every
round, through this index instead of a scan of every file.

Revision ID: 0007_cleanup
Revises: 0006
Create Date: 2026-12-10 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_cleanup"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_files_status_created_at", "files", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_files_status_created_at", table_name="files")
