"""Fine-tuning jobs: reads (scoped by organization here, not in the routes), the only
allowed state transitions, and what users and workers do to a job once it exists
(core.job_creation makes them)."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from core import webhooks
from core.db import session_scope
from core.errors import Conflict, NotFound
from core.events import add_event
from core.models import Job
from core.paging import page
from core.queue import PREFLIGHT_JOB_TASK, RUN_JOB_TASK, send
from core.settings import get_settings
from core.states import ACTIVE, TRANSITIONS, JobStatus, Level
from core.transitions import move, rows_matched


def transition(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    message: str | None = None,
    level: Level = "info",
    data: dict[str, Any] | None = None,
    conditions: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move a job to `to` if, and only if, its current state allows it (and the extra
    `conditions` hold, such as "this worker still holds the lease").

    One conditional UPDATE, so two racing writers (a cancel and a worker's claim, say)
    cannot both win; returns False when the job was not in a state that may move to
    `to`. An event records every transition; a terminal one, its webhook deliveries too.
    """
    if not move(session, Job, TRANSITIONS, job_id, to, conditions, values):
        return False
    add_event(session, job_id, message or f"Job {to.value}", level=level, data=data)
    webhooks.record_job_event(session, job_id, to)
    return True


def _no_such_job(job_id: str) -> NotFound:
    return NotFound(f"No fine-tuning job with id {job_id!r}", param="fine_tuning_job_id")


def get_job(session: Session, org_id: str, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.organization_id == org_id))
    if job is None:
        raise _no_such_job(job_id)
    return job


def lock_job(session: Session, org_id: str, job_id: str) -> Job:
    """`get_job`, with the job's row locked until the transaction ends: a write, not a
    SELECT ... FOR UPDATE, so that SQLite too takes its write lock before the row is read.
    A worker recording a checkpoint locks the same row (core.checkpoints.record_if_leased)."""
    if not rows_matched(session, update(Job).where(Job.id == job_id, Job.organization_id == org_id).values(id=Job.id)):
        raise _no_such_job(job_id)
    return get_job(session, org_id, job_id)


def _queue_position() -> ColumnElement[int | None]:
    """The place of the row's job in the training queue (1: the next a free worker
    claims), among the queued jobs of every organization in the order their messages
    reached the broker (those not sent yet last, by creation); None unless queued."""
    other = aliased(Job)
    ahead = or_(
        and_(Job.enqueued_at.is_(None), or_(other.enqueued_at.is_not(None), other.pk < Job.pk)),
        other.enqueued_at < Job.enqueued_at,  # NULL (not ahead) when the other was not sent
        and_(other.enqueued_at == Job.enqueued_at, other.pk < Job.pk),
    )
    queued = JobStatus.QUEUED.value
    count = select(func.count()).select_from(other).where(other.status == queued, ahead).correlate(Job)
    return case((Job.status == queued, count.scalar_subquery() + 1), else_=None)


def get_job_and_queue_position(session: Session, org_id: str, job_id: str) -> tuple[Job, int | None]:
    """`get_job` and, if it is queued, its place in the queue, in one query."""
    stmt = select(Job, _queue_position()).where(Job.id == job_id, Job.organization_id == org_id)
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise _no_such_job(job_id)
    return row[0], row[1]


def list_jobs(
    session: Session,
    org_id: str,
    after: str | None,
    limit: int,
    status: JobStatus | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[list[Job], bool]:
    """The organization's jobs, newest first; only those in `status` and whose metadata
    has every key of `metadata` with that value, when given."""
    stmt = select(Job).where(Job.organization_id == org_id)
    if status is not None:
        stmt = stmt.where(Job.status == status.value)
    for key, value in (metadata or {}).items():
        stmt = stmt.where(Job.metadata_[key].as_string() == value)
    return page(session, stmt, Job, after, limit)


def queue_positions(session: Session, job_ids: Collection[str]) -> dict[str, int]:
    """The places in the training queue of those of these jobs that are queued (see
    `_queue_position`); one query, none for no ids."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, _queue_position()).where(Job.id.in_(job_ids)))
    return {job_id: position for job_id, position in rows if position is not None}


def count_active(session: Session, org_id: str) -> int:
    """The organization's queued, running and paused jobs (what its quota counts)."""
    active = [s.value for s in ACTIVE]
    stmt = select(func.count()).select_from(Job).where(Job.organization_id == org_id, Job.status.in_(active))
    return session.scalar(stmt) or 0


def record_runtime(session: Session, job_id: str, runtime: dict[str, Any]) -> None:
    """What the worker runs the job with (device, dtype, speed settings, versions)."""
    session.execute(update(Job).where(Job.id == job_id).values(runtime=runtime))


def record_progress(
    session: Session, job_id: str, step: int, total_steps: int, epochs: int, seconds_per_step: float | None
) -> None:
    """Where the worker's training is: the job's `progress` (its estimated finish is
    derived from it), and `n_epochs` made what the trainer really runs. The epochs
    resolved at creation assumed batches of `batch_size` examples; with max_steps on
    the worker's token-budget batches the trainer's count differs, and the job says so."""
    progress = {
        "step": step,
        "total_steps": total_steps,
        "epochs": epochs,
        "seconds_per_step": seconds_per_step,
        "at": time.time(),
    }
    session.execute(update(Job).where(Job.id == job_id).values(progress=progress))
    spec = session.scalar(select(Job.spec).where(Job.id == job_id))
    if spec is None:
        return
    method = spec["method"]
    hyperparameters = method[method["type"]]["hyperparameters"]
    planned = hyperparameters["n_epochs"]
    if planned != epochs:
        hyperparameters["n_epochs"] = epochs
        session.execute(update(Job).where(Job.id == job_id).values(spec=spec))
        add_event(
            session,
            job_id,
            f"The job runs {epochs} epochs, not the {planned} estimated at creation: max_steps={total_steps} "
            "on the batches this worker builds",
            data={"n_epochs": epochs, "estimated_n_epochs": planned, "total_steps": total_steps},
        )


def estimated_finish(job: Job) -> int | None:
    """Unix seconds at which a running job should finish: its remaining steps at the
    step time its worker measured, from when it measured it. None until measured."""
    progress = job.progress
    if job.status != JobStatus.RUNNING or not progress or progress.get("seconds_per_step") is None:
        return None
    remaining = max(int(progress["total_steps"]) - int(progress["step"]), 0)
    return math.ceil(float(progress["at"]) + remaining * float(progress["seconds_per_step"]))


# The message a job waits for in each state that waits for a worker: its pre-flight
# (the pre-flight queue), then its training (the training queue).
MESSAGE_FOR = {JobStatus.VALIDATING_FILES: PREFLIGHT_JOB_TASK, JobStatus.QUEUED: RUN_JOB_TASK}
WAITING = [s.value for s in MESSAGE_FOR]


def publish(job_id: str, status: JobStatus = JobStatus.QUEUED) -> bool:
    """Send a committed job's id to the queue of the state it waits in, then note when
    (committing it). A job whose message could not be sent keeps `enqueued_at` empty,
    and the maintenance loop sends it again. Training goes to the queue of the job's
    placement (core.routing); a job without one, to the training queue."""
    settings = get_settings()
    queue = settings.preflight_queue
    if status == JobStatus.QUEUED:
        with session_scope() as session:
            placement = session.scalar(select(Job.placement).where(Job.id == job_id))
        queue = placement["queue"] if placement else settings.training_queue
    if not send(MESSAGE_FOR[status], job_id, queue):
        return False
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == status.value).values(enqueued_at=time.time()))
    return True


def requested_gpus(session: Session, job_id: str) -> int:
    """The GPUs the job runs on, as it was placed (qlora.resources.gpus; 1 for a job
    never placed)."""
    placement = session.scalar(select(Job.placement).where(Job.id == job_id))
    return int(placement["gpus"]) if placement else 1


def forget_sent_messages(session: Session, job_id: str | None = None) -> None:
    """The broker lost its messages: every waiting job (or this one, whose message a
    stopping worker consumed without running it) must be sent again."""
    only = [Job.id == job_id] if job_id is not None else []
    session.execute(update(Job).where(Job.status.in_(WAITING), *only).values(enqueued_at=None))


def unsent_jobs(session: Session) -> list[tuple[str, JobStatus]]:
    """Waiting jobs whose message never reached the broker, oldest first, with the state
    they wait in."""
    stmt = select(Job.id, Job.status).where(Job.status.in_(WAITING), Job.enqueued_at.is_(None)).order_by(Job.pk)
    return [(job_id, JobStatus(status)) for job_id, status in session.execute(stmt)]


def waiting_job(session: Session, job_id: str, status: JobStatus) -> Job | None:
    """The job if it is in `status` (a worker's message for a job that has moved on
    since is dropped)."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.status == status.value))


def cancel_job(session: Session, org_id: str, job_id: str) -> Job:
    """Cancel at once; a running worker sees the state at its next step and stops. Its
    checkpoints are kept (their adapters stay downloadable)."""
    job = get_job(session, org_id, job_id)
    if not transition(session, job.id, JobStatus.CANCELLED, message="Job cancelled by the user"):
        session.refresh(job)
        raise Conflict(f"Job {job_id} is already {job.status} and cannot be cancelled", code="job_not_cancellable")
    session.refresh(job)
    return job


def pause_job(session: Session, org_id: str, job_id: str) -> Job:
    """A queued job pauses at once; a running one is asked to: its worker saves a
    checkpoint at the end of the current step, frees the GPU and moves it to `paused`."""
    job = get_job(session, org_id, job_id)
    queued = [Job.status == JobStatus.QUEUED.value]  # a running job is paused by its worker
    if not transition(
        session, job.id, JobStatus.PAUSED, message="Job paused by the user", conditions=queued, enqueued_at=None
    ):
        asked = (
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.RUNNING.value, Job.pause_requested.is_(False))
            .values(pause_requested=True)
        )
        if rows_matched(session, asked):
            add_event(session, job.id, "Pause requested: the worker checkpoints and stops after the current step")
        else:
            session.refresh(job)
            if not (job.status == JobStatus.RUNNING and job.pause_requested):  # asking twice is fine
                raise Conflict(f"Job {job_id} is {job.status} and cannot be paused", code="job_not_pausable")
    session.flush()
    session.refresh(job)
    return job


def resume_job(org_id: str, job_id: str) -> Job:
    """paused -> queued (committed), then published; the next worker continues from the
    newest checkpoint."""
    with session_scope() as session:
        job = get_job(session, org_id, job_id)
        if not transition(
            session,
            job.id,
            JobStatus.QUEUED,
            message="Job resumed by the user",
            pause_requested=False,
            enqueued_at=None,
        ):
            session.refresh(job)
            raise Conflict(f"Job {job_id} is {job.status}, not paused; only paused jobs resume", code="job_not_paused")
    publish(job_id)
    with session_scope() as session:
        return get_job(session, org_id, job_id)


def fine_tuned_model_name(job: Job) -> str:
    """OpenAI's naming: ft:<base>:<org>[:<suffix>]:<job id>, with the real base model even
    when the job continued a fine-tuned model (no nested ft: names)."""
    parts = ["ft", job.base_model, job.organization_id] + ([job.suffix] if job.suffix else []) + [job.id]
    return ":".join(parts)
