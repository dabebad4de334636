"""Preference training (DPO): the reward metrics of its loss curve.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("job_metrics", sa.Column(name, sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_metrics") as batch_op:  # SQLite drops columns by copying the table
        for name in COLUMNS:
            batch_op.drop_column(name)
