"""Leases: at most one worker runs a job at any time, and a job whose worker died is
found and resumed.

A worker claims a queued job in one conditional UPDATE that names it the lease owner
until `lease_expires_at`, and renews the lease while it trains. Every write a worker
makes about the job's outcome is conditioned on still owning the lease, so a worker
that was presumed dead cannot publish over the run that replaced it. The reaper
(core.maintenance) requeues jobs whose lease expired, up to `max_attempts` runs.
Celery's own redelivery cannot do this: it acks a task whose worker process was killed,
and Redis redelivers long tasks every visibility timeout; both are harmless here because
a second delivery finds the job `running` under someone else's lease and is dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.checkpoints import latest as latest_checkpoint
from core.events import add_event
from core.ids import now
from core.jobs import transition
from core.models import Checkpoint, Job, JobAttempt, JobMetric
from core.settings import get_settings
from core.states import TERMINAL, JobStatus, Level, StopReason
from core.transitions import rows_matched

# How an attempt ended when its worker was asked to stop and gave the job back: such an
# attempt is no fault of the job, so it does not count toward max_attempts.
GIVEN_BACK = "worker_stopped"


@dataclass(frozen=True)
class Claim:
    job: Job
    attempt: int
    resume_from: Checkpoint | None


def deadline() -> float:
    return time.time() + get_settings().lease_seconds


def claim(session: Session, job_id: str, owner: str, worker: str) -> Claim | None:
    """queued -> running under `owner`'s lease; None when the job is not queued (a
    duplicate or stale message, a job cancelled or paused before it started)."""
    attempt = (session.scalar(select(Job.attempt).where(Job.id == job_id)) or 0) + 1
    checkpoint = latest_checkpoint(session, job_id)
    start = f"from checkpoint step {checkpoint.step}" if checkpoint else "from the beginning"
    if not transition(
        session,
        job_id,
        JobStatus.RUNNING,
        message=f"Attempt {attempt} started on worker {worker}, training {start}",
        data={"attempt": attempt, "lease_owner": owner, "resume_step": checkpoint.step if checkpoint else None},
        conditions=[Job.attempt == attempt - 1],
        attempt=attempt,
        lease_owner=owner,
        lease_expires_at=deadline(),
        worker=worker,
        started_at=func.coalesce(Job.started_at, now()),
        pause_requested=False,
    ):
        return None
    if checkpoint is not None:
        # The steps after the checkpoint are trained again; their first values go.
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > checkpoint.step))
    session.add(
        JobAttempt(
            job_id=job_id,
            number=attempt,
            lease_owner=owner,
            started_at=time.time(),
            resumed_from_step=checkpoint.step if checkpoint else None,
        )
    )
    return Claim(session.scalars(select(Job).where(Job.id == job_id)).one(), attempt, checkpoint)


def is_claimable(session: Session, job_id: str) -> bool:
    """Whether a message for the job is worth starting a run for: the job is queued.
    The claim itself decides (two workers may both see True; one claim wins)."""
    return session.scalar(select(Job.status).where(Job.id == job_id)) == JobStatus.QUEUED


def attempts_of(session: Session, job_id: str) -> list[JobAttempt]:
    """The job's lease history, first attempt first."""
    return list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)))


def renew(session: Session, job_id: str, owner: str) -> bool:
    """Extend the lease; False when it is no longer ours (expired and taken, or the
    job was cancelled): the worker must stop."""
    renewal = (
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=deadline())
    )
    return rows_matched(session, renewal) == 1


def stop_reason(session: Session, job_id: str, owner: str) -> StopReason | None:
    """Whether the run under `owner`'s lease must stop, checked after every step: the
    job was cancelled, its lease is no longer this run's, or a pause was asked for."""
    status, lease_owner, pause = session.execute(
        select(Job.status, Job.lease_owner, Job.pause_requested).where(Job.id == job_id)
    ).one()
    if status == JobStatus.CANCELLED:
        return "cancel"
    if lease_owner != owner or status != JobStatus.RUNNING:
        return "lease_lost"
    return "pause" if pause else None


def end_run(
    session: Session,
    job_id: str,
    owner: str,
    attempt: int,
    outcome: str,
    to: JobStatus | None = None,
    *,
    message: str | None = None,
    level: Level = "info",
    data: dict[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Close an attempt: move the job to `to` (with `transition`'s message, level, data
    and column values) if this worker still holds the lease, release the lease and
    record how the attempt ended. Returns whether `to` was taken."""
    moved = to is not None and transition(
        session, job_id, to, message=message, level=level, data=data, conditions=[Job.lease_owner == owner], **values
    )
    session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner).values(lease_owner=None, lease_expires_at=None)
    )
    _close_attempt(session, job_id, attempt, outcome, time.time())
    return moved


def give_back(session: Session, job_id: str, owner: str, attempt: int, steps: int) -> bool:
    """The worker is shutting down: running -> queued (to be published again), the
    lease released and the attempt closed as GIVEN_BACK."""
    return end_run(
        session,
        job_id,
        owner,
        attempt,
        GIVEN_BACK,
        JobStatus.QUEUED,
        message=f"The worker was asked to stop at step {steps}; the job is queued again to resume from "
        f"{_resume_point(session, job_id)} (attempt {attempt} does not count toward max_attempts)",
        level="warn",
        data={"attempt": attempt, "step": steps},
        enqueued_at=None,
    )


def _resume_point(session: Session, job_id: str) -> str:
    checkpoint = latest_checkpoint(session, job_id)
    return f"checkpoint step {checkpoint.step}" if checkpoint else "the beginning (no checkpoint yet)"


def _runs_that_count(session: Session, job_id: str, attempt: int) -> int:
    """Attempts toward max_attempts: all but those given back by a stopping worker."""
    given_back = session.scalar(
        select(func.count()).where(JobAttempt.job_id == job_id, JobAttempt.outcome == GIVEN_BACK)
    )
    return attempt - (given_back or 0)


def _close_attempt(session: Session, job_id: str, number: int, outcome: str, ended_at: float) -> None:
    session.execute(
        update(JobAttempt)
        .where(JobAttempt.job_id == job_id, JobAttempt.number == number, JobAttempt.ended_at.is_(None))
        .values(ended_at=ended_at, outcome=outcome)
    )


def reap(session: Session) -> int:
    """Handle every job whose lease expired: requeue it to resume from its newest
    checkpoint, pause it if a pause was asked for, or fail it after max_attempts runs.
    Returns the number of jobs handled; requeued jobs are published by the reconciler."""
    current, max_attempts = time.time(), get_settings().max_attempts
    expired = session.execute(
        select(
            Job.id,
            Job.status,
            Job.attempt,
            Job.lease_owner,
            func.coalesce(Job.lease_expires_at, 0.0),
            Job.pause_requested,
        ).where(Job.lease_owner.is_not(None), Job.lease_expires_at < current)
    ).all()
    for job_id, status, attempt, owner, expired_at, pause_requested in expired:
        still_expired = [Job.lease_owner == owner, Job.lease_expires_at < current]  # not renewed meanwhile
        released = {"lease_owner": None, "lease_expires_at": None, "enqueued_at": None}
        lost = f"Worker lease {owner} expired {current - expired_at:.0f} s ago (attempt {attempt})"
        if status in TERMINAL:  # cancelled while its worker died: only the lease is left
            session.execute(update(Job).where(Job.id == job_id, *still_expired).values(**released))
        elif pause_requested:
            transition(
                session,
                job_id,
                JobStatus.PAUSED,
                message=f"{lost}; job paused as requested",
                level="warn",
                conditions=still_expired,
                pause_requested=False,
                **released,
            )
        elif (runs := _runs_that_count(session, job_id, attempt)) >= max_attempts:
            message = f"{lost}; the job ran {runs} times, the limit (max_attempts), and is not retried"
            transition(
                session,
                job_id,
                JobStatus.FAILED,
                message=message,
                level="error",
                conditions=still_expired,
                error={"code": "worker_lost", "message": message, "param": None},
                **released,
            )
        else:
            transition(
                session,
                job_id,
                JobStatus.QUEUED,
                message=f"{lost}; requeued to resume from {_resume_point(session, job_id)}",
                level="warn",
                conditions=still_expired,
                **released,
            )
        _close_attempt(session, job_id, attempt, "lease_expired", expired_at)
    return len(expired)


def note_dropped_delivery(session: Session, job_id: str) -> None:
    """A message for a job that is not queued: say so on a running job (the case of a
    broker redelivering a long task), so duplicates are visible, not silent."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is not None and job.status == JobStatus.RUNNING:
        add_event(
            session,
            job_id,
            f"A second delivery of this job's message was dropped: attempt {job.attempt} is running "
            f"under lease {job.lease_owner}",
            data={"attempt": job.attempt, "lease_owner": job.lease_owner},
        )
