"""Pre-flight in a worker: a job keeps its request (re-resolved once its trainable
examples are counted) and previews are computed by pre-flight workers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("request", sa.JSON(), nullable=True))
    op.create_table(
        "file_previews",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("file_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_file_previews_id", "file_previews", ["id"], unique=True)
    op.create_index("ix_file_previews_key", "file_previews", ["key"])
    op.create_index("ix_file_previews_created_at", "file_previews", ["created_at"])


def downgrade() -> None:
    op.drop_table("file_previews")
    op.drop_column("jobs", "request")
