"""Stored job specs become resolved specs (core.specs.ResolvedSpec): the data format
and packing that job creation used to leave at "auto" are written down.

A job's format is its training file's; a finished job whose training file was deleted
since gets "chat", the format every such job of the time was most likely in (the field
is only displayed then: the job can no longer run). Packing "auto" is what the worker
decided: on, except for the prompt-learning adapters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning", "p_tuning")
jobs = sa.table("jobs", sa.column("pk", sa.Integer), sa.column("training_file", sa.String), sa.column("spec", sa.JSON))
files = sa.table("files", sa.column("id", sa.String), sa.column("format", sa.String))


def resolved(spec: dict[str, Any], file_format: str | None) -> dict[str, Any]:
    data = spec["qlora"]["data"]
    if data.get("format", "auto") == "auto":
        data["format"] = file_format or "chat"
    if data.get("packing", "auto") == "auto":
        data["packing"] = spec["qlora"]["adapter"].get("type", "lora") not in PROMPT_LEARNING
    spec.pop("hyperparameters", None)
    return spec


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(jobs.c.pk, jobs.c.spec, files.c.format).outerjoin(files, files.c.id == jobs.c.training_file)
    ).all()
    for pk, spec, file_format in rows:
        connection.execute(sa.update(jobs).where(jobs.c.pk == pk).values(spec=resolved(dict(spec), file_format)))


def downgrade() -> None:
    # A resolved spec is also a valid spec as asked: nothing to undo.
    pass
