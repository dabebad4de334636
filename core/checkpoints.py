"""Training checkpoints: recorded by the worker that holds the job's lease, listed and
downloaded through the API, resumed from after a lost worker or a pause, and used as
the starting adapter of another job (`from_checkpoint`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.ids import new_id
from core.jobs import get_job
from core.models import Checkpoint, Job
from core.paging import page
from core.storage import StoredObject


def list_checkpoints(session: Session, job_id: str, after: str | None, limit: int) -> tuple[list[Checkpoint], bool]:
    return page(session, select(Checkpoint).where(Checkpoint.job_id == job_id), Checkpoint, after, limit)


def get_checkpoint(session: Session, org_id: str, job_id: str, checkpoint_id: str) -> Checkpoint:
    job = get_job(session, org_id, job_id)
    checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.id == checkpoint_id, Checkpoint.job_id == job.id))
    if checkpoint is None:
        raise NotFound(f"Job {job_id} has no checkpoint {checkpoint_id!r}", param="checkpoint_id")
    return checkpoint


def find_for_organization(session: Session, org_id: str, checkpoint_id: str) -> tuple[Checkpoint, Job]:
    """A checkpoint of any of the organization's jobs, for `from_checkpoint`."""
    row = session.execute(
        select(Checkpoint, Job)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(Checkpoint.id == checkpoint_id, Job.organization_id == org_id)
    ).first()
    if row is None:
        raise NotFound(f"No checkpoint with id {checkpoint_id!r}", param="from_checkpoint")
    return row[0], row[1]


def record(
    session: Session, job_id: str, step: int, metrics: dict[str, Any], adapter: StoredObject, state: StoredObject
) -> Checkpoint:
    checkpoint = Checkpoint(
        id=new_id("ftckpt"),
        job_id=job_id,
        step=step,
        metrics=metrics,
        adapter_key=adapter.key,
        adapter_sha256=adapter.sha256,
        adapter_bytes=adapter.bytes,
        state_key=state.key,
        state_bytes=state.bytes,
    )
    session.add(checkpoint)
    return checkpoint


def prune(session: Session, job_id: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` checkpoints' rows; returns their storage keys,
    to be removed once the deletion is committed."""
    stale = session.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()).offset(keep)
    ).all()
    for checkpoint in stale:
        session.delete(checkpoint)
    return [key for c in stale for key in (c.adapter_key, c.state_key)]
