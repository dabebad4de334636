"""What an operator watches, read from the database when asked (api.metrics serves it at
each scrape): the same answer from every API process, and nothing to drift or reset."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.models import Job, JobAttempt, JobMetric
from core.states import JobStatus


def jobs_by_status(session: Session) -> dict[str, int]:
    """Jobs in each status, every status present (0 when none)."""
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {status.value: counts.get(status.value, 0) for status in JobStatus}


def gpus_of_job() -> ColumnElement[int]:
    """The SQL expression of a job's GPU count: its spec's `qlora.resources.gpus`, 1 when
    the spec names none (single-GPU jobs, and jobs from before multi-GPU training)."""
    return func.coalesce(Job.spec[("qlora", "resources", "gpus")].as_integer(), 1)


def gpu_hours_by_organization(session: Session, at: float | None = None) -> dict[str, float]:
    """GPU-hours each organization's jobs have held: every attempt (a claim by a worker,
    core.leases) from its start to its end (now, for one still running) times the job's
    GPU count. Attempts, not the job's first start to its finish: a job paused or waiting
    in the queue between attempts holds no GPU. Deleted jobs no longer count."""
    ended = func.coalesce(JobAttempt.ended_at, at if at is not None else time.time())
    gpu_seconds = func.sum((ended - JobAttempt.started_at) * gpus_of_job())
    rows = session.execute(
        select(Job.organization_id, gpu_seconds)
        .join(JobAttempt, JobAttempt.job_id == Job.id)
        .group_by(Job.organization_id)
    )
    return {org: float(seconds or 0.0) / 3600 for org, seconds in rows}


@dataclass(frozen=True)
class TrainingSpeed:
    job_id: str
    organization_id: str
    tokens_per_second: float


def training_speeds(session: Session) -> list[TrainingSpeed]:
    """Each running job's training throughput: the tokens/s of its latest training step
    that measured it (a job that has not logged a step yet has none)."""
    latest = (
        select(JobMetric.job_id, func.max(JobMetric.step).label("step"))
        .join(Job, Job.id == JobMetric.job_id)
        .where(
            Job.status == JobStatus.RUNNING.value,
            JobMetric.split == "train",
            JobMetric.tokens_per_second.is_not(None),
        )
        .group_by(JobMetric.job_id)
        .subquery()
    )
    rows = session.execute(
        select(Job.id, Job.organization_id, JobMetric.tokens_per_second)
        .join(latest, latest.c.job_id == Job.id)
        .join(JobMetric, (JobMetric.job_id == latest.c.job_id) & (JobMetric.step == latest.c.step))
        .where(JobMetric.split == "train", JobMetric.tokens_per_second.is_not(None))
        .order_by(Job.id)
    )
    return [TrainingSpeed(job_id, org, speed) for job_id, org, speed in rows if speed is not None]
