"""Merge operations: an adapter merged into its full-precision base model by a worker,
with its log, its published archive and, optionally, its registration as a base model
of the organization.

Revision ID: 0009_merges
Revises: 0008_example_tasks
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_merges"
down_revision: str | None = "0008_example_tasks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merges",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("checkpoint_id", sa.String(64), nullable=True),
        sa.Column("adapter_key", sa.String(255), nullable=False),
        sa.Column("adapter_type", sa.String(32), nullable=False),
        sa.Column("base_model", sa.String(255), nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("base_weights", sa.String(16), nullable=False),
        sa.Column("registered_as", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("runtime", sa.JSON(), nullable=True),
        sa.Column("filename", sa.String(255), nullable=True),
        sa.Column("storage_key", sa.String(255), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("enqueued_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_merges_id", "merges", ["id"], unique=True)
    op.create_index("ix_merges_organization_id", "merges", ["organization_id"])
    op.create_index("ix_merges_job_id", "merges", ["job_id"])
    op.create_index("ix_merges_status", "merges", ["status"])
    op.create_table(
        "merge_events",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("merge_id", sa.String(64), sa.ForeignKey("merges.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
    )
    op.create_index("ix_merge_events_merge_id", "merge_events", ["merge_id"])


def downgrade() -> None:
    op.drop_table("merge_events")
    op.drop_table("merges")
