"""Example tasks (multitask prompt tuning): a file's valid examples per task name.

Revision ID: 0008_example_tasks
Revises: 0007_cleanup
Create Date: 2026-12-10 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_example_tasks"
down_revision: str | None = "0007_cleanup"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("tasks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "tasks")
