"""Job events (the log a user reads) and metrics (the loss curve), written by the
worker as training runs and read by the API."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.models import Job, JobEvent, JobMetric
from core.paging import page
from core.states import Level


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: Level = "info",
    type: Literal["message", "metrics"] = "message",
    data: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(id=new_id("ftevent"), job_id=job_id, level=level, type=type, message=message, data=data)
    session.add(event)
    return event


def record_metric(session: Session, job_id: str, step: int, values: dict[str, Any], split: str = "train") -> None:
    """Store one point of the time series and mirror it as a metrics event."""
    session.add(JobMetric(job_id=job_id, step=step, split=split, **values))
    add_event(
        session,
        job_id,
        f"Step {step}: "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items() if v is not None),
        type="metrics",
        data={"step": step, "split": split, **values},
    )


def events_after(session: Session, job_id: str, after_pk: int, limit: int = 500) -> list[JobEvent]:
    """Events in chronological order from a position, for streams."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.pk > after_pk).order_by(JobEvent.pk).limit(limit)
    return list(session.scalars(stmt))


def event_position(session: Session, job_id: str, event_id: str | None) -> int:
    """The position of one of the job's events in its stream (what `events_after` takes),
    for a stream that resumes after it (Server-Sent Events' `Last-Event-ID`). No id, an
    unknown one or another job's event: 0, the beginning."""
    if not event_id:
        return 0
    return session.scalar(select(JobEvent.pk).where(JobEvent.id == event_id, JobEvent.job_id == job_id)) or 0


def poll_stream(session: Session, job_id: str, after_pk: int) -> tuple[str | None, list[JobEvent]]:
    """One poll of a job's event stream: the job's status, then its events after
    `after_pk`. The status is read first: if the job was already over, the events read
    next include its last one, so a stream that ends at this status has missed nothing."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status, events_after(session, job_id, after_pk)


def metrics_for(session: Session, job_id: str) -> list[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.split, JobMetric.step)
    return list(session.scalars(stmt))


def list_events(session: Session, job_id: str, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI pages them."""
    return page(session, select(JobEvent).where(JobEvent.job_id == job_id), JobEvent, after, limit)
