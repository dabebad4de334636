"""Training checkpoints: recorded by the worker that holds the job's lease, listed and
downloaded through the API, resumed from after a lost worker or a pause, and used as
the starting adapter of another job (`from_checkpoint`, core.fine_tuned_models).

A succeeded job's final adapter is recorded as its last checkpoint (`record_final`), as
OpenAI lists it: it shares its object with the adapter artifact and has no trainer
state, so it is never resumed from and never pruned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
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


def _resumable(job_id: str) -> Select[Checkpoint]:
    return select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.state_key.is_not(None))


def latest(session: Session, job_id: str) -> Checkpoint | None:
    """The newest checkpoint a run can resume from (one with a trainer state)."""
    return session.scalar(_resumable(job_id).order_by(Checkpoint.step.desc()))


def record(
    session: Session,
    job_id: str,
    step: int,
    metrics: dict[str, Any],
    adapter: StoredObject,
    state: StoredObject | None,
) -> Checkpoint:
    """`state`: the trainer's state a resumed run loads; None for the final adapter,
    which nothing resumes from."""
    checkpoint = Checkpoint(
        id=new_id("ftckpt"),
        job_id=job_id,
        step=step,
        metrics=metrics,
        adapter_key=adapter.key,
        adapter_sha256=adapter.sha256,
        adapter_bytes=adapter.bytes,
        state_key=state.key if state else None,
        state_bytes=state.bytes if state else None,
    )
    session.add(checkpoint)
    return checkpoint


def record_final(
    session: Session, job_id: str, step: int, metrics: dict[str, Any], adapter: StoredObject
) -> tuple[Checkpoint, list[str]]:
    """The job's published adapter (its artifact's object) as its last checkpoint.
    A checkpoint already saved at that step (a pause asked for at the very last step)
    is replaced; returns the storage keys of what it replaced, to be removed once this
    is committed."""
    replaced = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == step)).all()
    stale = delete_rows(session, replaced)
    session.flush()  # the replaced row leaves before its step is taken again
    return record(session, job_id, step, metrics, adapter, None), stale


def delete_rows(session: Session, rows: Sequence[Checkpoint]) -> list[str]:
    """Delete checkpoints' rows; returns their storage keys, each once (a final
    checkpoint's adapter is the artifact's object), to be removed once committed."""
    for checkpoint in rows:
        session.delete(checkpoint)
    return sorted({key for c in rows for key in (c.adapter_key, c.state_key) if key is not None})


def prune(session: Session, job_id: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` resumable checkpoints' rows (a final one is
    never pruned); returns their storage keys, to be removed once the deletion is
    committed."""
    stale = session.scalars(_resumable(job_id).order_by(Checkpoint.step.desc()).offset(keep)).all()
    return delete_rows(session, stale)


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
