"""Training checkpoints: recorded by the worker that holds the job's lease, listed and
downloaded through the API, resumed from after a lost worker or a pause, and used as
the starting adapter of another job (`from_checkpoint`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.events import add_event
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


def latest(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc()))


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


def record_if_leased(
    session: Session,
    job_id: str,
    owner: str,
    step: int,
    metrics: dict[str, Any],
    adapter: StoredObject,
    state: StoredObject,
    keep: int,
) -> tuple[Checkpoint | None, list[str]]:
    """Record a checkpoint a worker has stored, if that worker still holds the job's
    lease, and prune the job's older ones. Returns the checkpoint (None: the lease is
    gone, nothing recorded) and the storage keys to delete once this is committed: the
    pruned checkpoints', or the new one's when it was refused."""
    # Locks the job's row: the reaper cannot take the lease between check and insert.
    held = session.scalar(select(Job.id).where(Job.id == job_id, Job.lease_owner == owner).with_for_update())
    if held is None:
        return None, [adapter.key, state.key]
    checkpoint = record(session, job_id, step, metrics, adapter, state)
    add_event(
        session,
        job_id,
        f"Checkpoint {checkpoint.id} saved at step {step}",
        data={"checkpoint_id": checkpoint.id, "step": step, "state_bytes": state.bytes},
    )
    return checkpoint, prune(session, job_id, keep)
