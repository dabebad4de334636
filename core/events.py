"""Job events (the log a user reads) and metrics (the loss curve), written by the
worker as training runs and read by the API."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.models import JobEvent, JobMetric
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


def metrics_for(session: Session, job_id: str) -> list[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.split, JobMetric.step)
    return list(session.scalars(stmt))


def list_events(session: Session, job_id: str, after: str | None, limit: int) -> tuple[list[JobEvent], bool]:
    """Newest first, as OpenAI pages them."""
    return page(session, select(JobEvent).where(JobEvent.job_id == job_id), JobEvent, after, limit)
