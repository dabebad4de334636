"""Deleting what training stored: a finished job with everything it produced, a
fine-tuned model (its adapter and its job's checkpoints), or one checkpoint. Rows go
first (committed), then the bytes, as for files (core.files): a crash in between leaves
at worst unreferenced bytes, never a row whose bytes are gone.

What is refused, and why:
- a job that has not finished (validating_files, queued, running, paused): its worker
  writes to it; cancel it first. A cancelled job whose worker still holds its lease
  (it stops at its next step) is refused until the worker has let go.
- a checkpoint that an active job continues (`from_checkpoint`, or a fine-tuned model or
  checkpoint as its `model`: it starts, or starts again after a lost worker, from that
  adapter), and so a job or fine-tuned model with such a checkpoint
  (core.fine_tuned_models.users);
- a job, a fine-tuned model or a checkpoint whose adapter a queued or running merge is
  to read; a job or fine-tuned model that a queued or running evaluation is to evaluate;
- a succeeded job's final checkpoint alone: it is its fine-tuned model's adapter, which
  goes with the model (`delete_model`, with the job's other checkpoints);
- the newest checkpoint of an active job: a paused, stopped or lost run resumes from its
  job's newest checkpoint. Older ones are never read again by their job and may go while
  it runs; the job's row is locked meanwhile, as a worker recording (and pruning)
  checkpoints locks it, so the two take turns.
A job created from a checkpoint locks the checkpoint's job row too
(core.fine_tuned_models.hold), so it either is seen here or finds the checkpoint gone.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.artifacts import ADAPTER
from core.checkpoints import delete_rows
from core.db import session_scope
from core.errors import Conflict, NotFound
from core.evaluations import refuse_while_evaluating, result_file_ids
from core.fine_tuned_models import get_model, users
from core.jobs import fine_tuned_model_name, lock_job
from core.merges import refuse_while_merging
from core.models import Artifact, Checkpoint, File, Job
from core.states import ACTIVE, TERMINAL
from core.storage import ObjectStore


def _refuse_while_used(session: Session, job: Job, checkpoint: Checkpoint | None, what: str) -> None:
    in_use = users(session, job, checkpoint)
    if in_use:
        raise Conflict(
            f"{what}: active {', '.join(in_use)}; cancel it or wait until it has finished",
            code="checkpoint_in_use",
        )


def delete_job(storage: ObjectStore, org_id: str, job_id: str) -> None:
    """Delete a finished job: its row and, with it (the database cascades), its events,
    metrics, attempts, checkpoints, artifacts and evaluations; its result files and its
    evaluations'; then their bytes
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
        _refuse_while_used(session, job, None, f"Job {job_id} cannot be deleted")
        refuse_while_merging(session, job.id, f"Job {job_id} cannot be deleted")
        refuse_while_evaluating(session, job.id, f"Job {job_id} cannot be deleted")
        results = [File.organization_id == org_id, File.id.in_(job.result_files + result_file_ids(session, job.id))]
        result_keys = session.scalars(select(File.storage_key).where(*results)).all()
        session.execute(delete(File).where(*results))
        session.execute(delete(Job).where(Job.id == job.id))
    for key in (f"artifacts/{job_id}", f"checkpoints/{job_id}", *result_keys):
        storage.delete(key)


def delete_checkpoint(storage: ObjectStore, org_id: str, job_id: str, checkpoint_id: str) -> None:
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
        if checkpoint.state_key is None:
            model = fine_tuned_model_name(job)
            raise Conflict(
                f"Checkpoint {checkpoint_id} is the adapter of the fine-tuned model {model}, published at the job's "
                f"last step: delete the model (DELETE /v1/models/{model}), which takes the job's checkpoints too",
                code="checkpoint_is_fine_tuned_model",
            )
        _refuse_while_used(session, job, checkpoint, f"Checkpoint {checkpoint_id} cannot be deleted")
        refuse_while_merging(session, job.id, f"Checkpoint {checkpoint_id} cannot be deleted", checkpoint.id)
        session.delete(checkpoint)
    for key in {checkpoint.adapter_key, checkpoint.state_key}:
        storage.delete(str(PurePosixPath(key).parent))


def delete_model(storage: ObjectStore, org_id: str, name: str, param: str) -> None:
    """Delete a fine-tuned model: its adapter and every checkpoint of its job (adapters
    and trainer states), the rows first (committed), then the bytes. The job stays, with
    its `fine_tuned_model` name (as OpenAI keeps it), events, metrics and result files.
    Refused (409) while an active job continues the model or one of its checkpoints, or a
    merge is to read one of them."""
    with session_scope() as session:
        job = get_model(session, org_id, name, param)
        # Before the users are read: a job or merge being created from this model locks
        # the row too (core.fine_tuned_models.hold): it is either committed and seen, or
        # sees the model gone.
        lock_job(session, org_id, job.id)
        in_use = users(session, job)
        if in_use:
            raise Conflict(
                f"Fine-tuned model {name} is in use: active {', '.join(in_use)}; cancel it or wait until it has "
                "finished",
                param=param,
                code="model_in_use",
            )
        refuse_while_merging(session, job.id, f"Fine-tuned model {name} cannot be deleted")
        refuse_while_evaluating(session, job.id, f"Fine-tuned model {name} cannot be deleted")
        artifact = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == ADAPTER))
        if artifact is None:  # deleted by a concurrent request meanwhile
            raise NotFound(f"Fine-tuned model {name!r} was deleted", param=param, code="model_not_found")
        session.delete(artifact)
        stale = set(delete_rows(session, session.scalars(select(Checkpoint).where(Checkpoint.job_id == job.id)).all()))
        stale.add(artifact.storage_key)
    for key in sorted(stale):
        storage.delete(key)
