"""Deleting what training stored: a finished job with everything it produced, or one
checkpoint. Rows go first (committed), then the bytes, as for files (core.files): a
crash in between leaves at worst unreferenced bytes, never a row whose bytes are gone.

What is refused, and why:
- a job that has not finished (validating_files, queued, running, paused): its worker
  writes to it; cancel it first. A cancelled job whose worker still holds its lease
  (it stops at its next step) is refused until the worker has let go.
- a checkpoint that an active job names as `from_checkpoint` (it starts, or starts again
  after a lost worker, from that adapter), and so a job with such a checkpoint;
- the newest checkpoint of an active job: a paused, stopped or lost run resumes from its
  job's newest checkpoint. Older ones are never read again by their job and may go while
  it runs; the job's row is locked meanwhile, as a worker recording (and pruning)
  checkpoints locks it, so the two take turns.
A job created from a checkpoint at the moment that checkpoint is deleted fails at its
start with `checkpoint_not_found`, naming it.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import PurePosixPath

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import Conflict, NotFound
from core.jobs import lock_job
from core.models import Checkpoint, File, Job
from core.states import ACTIVE, TERMINAL
from core.storage import LocalStorage

ACTIVE_STATES = [s.value for s in ACTIVE]


def _refuse_while_started_from(session: Session, org_id: str, checkpoint_ids: Collection[str], what: str) -> None:
    if not checkpoint_ids:
        return
    user = session.execute(
        select(Job.id, Job.spec["from_checkpoint"].as_string()).where(
            Job.organization_id == org_id,
            Job.status.in_(ACTIVE_STATES),
            Job.spec["from_checkpoint"].as_string().in_(checkpoint_ids),
        )
    ).first()
    if user is not None:
        raise Conflict(
            f"{what}: active job {user[0]} starts from its checkpoint {user[1]} (from_checkpoint); "
            "cancel that job or wait until it has finished",
            code="checkpoint_in_use",
        )


def delete_job(storage: LocalStorage, org_id: str, job_id: str) -> None:
    """Delete a finished job: its row and, with it (the database cascades), its events,
    metrics, attempts, checkpoints and artifacts; its result files; then their bytes
    (the job's artifact and checkpoint folders whole, so objects of replaced attempts
    go too). Commits."""
    with session_scope() as session:
        job = lock_job(session, org_id, job_id)
        if job.status not in TERMINAL:
            raise Conflict(
                f"Job {job_id} is {job.status}; only a finished job (succeeded, failed or cancelled) can be deleted: "
                "cancel it first",
                code="job_not_finished",
            )
        if job.lease_owner is not None:
            raise Conflict(
                f"Job {job_id} is {job.status} but its worker is still stopping (it stops after its current step); "
                "try again in a few seconds",
                code="job_still_stopping",
            )
        checkpoint_ids = session.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job.id)).all()
        _refuse_while_started_from(session, org_id, checkpoint_ids, f"Job {job_id} cannot be deleted")
        results = [File.organization_id == org_id, File.id.in_(job.result_files)]
        result_keys = session.scalars(select(File.storage_key).where(*results)).all()
        session.execute(delete(File).where(*results))
        session.execute(delete(Job).where(Job.id == job.id))
    for key in (f"artifacts/{job_id}", f"checkpoints/{job_id}", *result_keys):
        storage.delete(key)


def delete_checkpoint(storage: LocalStorage, org_id: str, job_id: str, checkpoint_id: str) -> None:
    """Delete one checkpoint's row, then its objects (its folder). Commits."""
    with session_scope() as session:
        job = lock_job(session, org_id, job_id)
        by_step = select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step.desc())
        kept = list(session.scalars(by_step))
        checkpoint = next((c for c in kept if c.id == checkpoint_id), None)
        if checkpoint is None:
            raise NotFound(f"Job {job_id} has no checkpoint {checkpoint_id!r}", param="checkpoint_id")
        if job.status in ACTIVE and checkpoint is kept[0]:
            raise Conflict(
                f"Checkpoint {checkpoint_id} is the newest of job {job_id}, which is {job.status}: the job resumes "
                "from it after a pause, a stop or a lost worker; delete it once the job has finished",
                code="checkpoint_in_use",
            )
        _refuse_while_started_from(session, org_id, [checkpoint.id], f"Checkpoint {checkpoint_id} cannot be deleted")
        session.delete(checkpoint)
    for key in {checkpoint.adapter_key, checkpoint.state_key}:
        storage.delete(str(PurePosixPath(key).parent))
