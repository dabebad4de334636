"""Example tasks (multitask prompt tuning): a file's valid examples per task name.

Revision ID: 0007_example_tasks
Revises: 0006
Create Date: 2026-12-10 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_example_tasks"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("files", sa.Column("tasks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("files", "tasks")
