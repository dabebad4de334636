"""Fine-tuned models as objects: a job keeps the base model it trains on (`base_model`:
its `model` may now name a fine-tuned model or a checkpoint) and the job whose adapter it
continues (`source_job_id`, what deleting that model checks); names grow to fit nested
ones; a job's final adapter is recorded as its last checkpoint, which has no trainer
state to resume from (`state_key`, `state_bytes` null). A job keeps the checkpoint it
starts from too (`source_checkpoint_id`, what deleting a checkpoint checks for).

SQLite neither enforces string lengths nor changes a column without copying its table,
and copying `jobs` (the parent of events, metrics, checkpoints... with ON DELETE CASCADE
and foreign keys on) would empty its children: there the jobs columns are only added.

Revision ID: 0010_fine_tuned_models
Revises: 0009_merges
Create Date: 2026-12-01 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_fine_tuned_models"
down_revision: str | None = "0009_merges"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table(
    "jobs",
    sa.column("pk", sa.Integer),
    sa.column("model", sa.String),
    sa.column("base_model", sa.String),
    sa.column("spec", sa.JSON),
    sa.column("source_job_id", sa.String),
    sa.column("source_checkpoint_id", sa.String),
)
checkpoints = sa.table("checkpoints", sa.column("id", sa.String), sa.column("job_id", sa.String))


def upgrade() -> None:
    op.add_column("jobs", sa.Column("base_model", sa.String(length=512), nullable=True))
    op.add_column("jobs", sa.Column("source_job_id", sa.String(length=64), nullable=True))
    op.add_column("jobs", sa.Column("source_checkpoint_id", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_jobs_source_job_id"), "jobs", ["source_job_id"], unique=False)
    # Until now a job's model was always its base model, and a job continued only a
    # checkpoint it named by id (`from_checkpoint`).
    connection = op.get_bind()
    connection.execute(sa.update(jobs).values(base_model=jobs.c.model))
    started = sa.select(jobs.c.pk, checkpoints.c.id, checkpoints.c.job_id).join(
        checkpoints, checkpoints.c.id == jobs.c.spec["from_checkpoint"].as_string()
    )
    for pk, checkpoint_id, job_id in connection.execute(started).all():
        connection.execute(
            sa.update(jobs).where(jobs.c.pk == pk).values(source_job_id=job_id, source_checkpoint_id=checkpoint_id)
        )
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "base_model", existing_type=sa.String(length=512), nullable=False)
        op.alter_column("jobs", "model", existing_type=sa.String(length=255), type_=sa.String(length=512))
        op.alter_column("jobs", "fine_tuned_model", existing_type=sa.String(length=255), type_=sa.String(length=512))
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.alter_column("state_key", existing_type=sa.String(length=255), nullable=True)
        batch_op.alter_column("state_bytes", existing_type=sa.BigInteger(), nullable=True)


def downgrade() -> None:
    # Final checkpoints have no state; their adapter stays the job's adapter artifact.
    op.execute(sa.text("DELETE FROM checkpoints WHERE state_key IS NULL"))
    with op.batch_alter_table("checkpoints") as batch_op:
        batch_op.alter_column("state_bytes", existing_type=sa.BigInteger(), nullable=False)
        batch_op.alter_column("state_key", existing_type=sa.String(length=255), nullable=False)
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("jobs", "fine_tuned_model", existing_type=sa.String(length=512), type_=sa.String(length=255))
        op.alter_column("jobs", "model", existing_type=sa.String(length=512), type_=sa.String(length=255))
    op.drop_index(op.f("ix_jobs_source_job_id"), table_name="jobs")
    op.drop_column("jobs", "source_checkpoint_id")
    op.drop_column("jobs", "source_job_id")
    op.drop_column("jobs", "base_model")
