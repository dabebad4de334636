"""Inference servers: each running `ftsvc inference` records itself (its URL, device and
the base models it holds) and renews the row as its heartbeat; the API sends
generations to live ones.

Revision ID: 0012_inference_servers
Revises: 0010_fine_tuned_models
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_inference_servers"
down_revision: str | None = "0011_evaluations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inference_servers",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("url", sa.String(512), nullable=False, unique=True),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("device_name", sa.String(255), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("loaded_bases", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_inference_servers_heartbeat_at", "inference_servers", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_inference_servers_heartbeat_at", table_name="inference_servers")
    op.drop_table("inference_servers")
