"""Progress a person can follow: the job's step, total steps and measured step time
(`progress`, written by its worker), and the tokens in the loss per metrics point.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("progress", sa.JSON(), nullable=True))
    op.add_column("job_metrics", sa.Column("trained_tokens", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("job_metrics", "trained_tokens")
    op.drop_column("jobs", "progress")
