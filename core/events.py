"""Job events (the log a user reads) and metrics (the loss curve), written by the
worker as training runs and read by the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.orm import Session

from core.ids import new_id
from core.models import Job, JobEvent, JobMetric
from core.paging import page
from core.states import Level

# A metrics point's data: the training batches, or an evaluation on the validation data.
Split = Literal["train", "valid"]


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
    """Store one point of the time series and mirror it as a metrics event: "Step 5: ..."
    for training, "Validation at step 5: ..." for an evaluation on the validation data."""
    session.add(JobMetric(job_id=job_id, step=step, split=split, **values))
    figures = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items() if v is not None
    )
    add_event(
        session,
        job_id,
        f"{'Validation at step' if split == 'valid' else 'Step'} {step}: {figures}",
        type="metrics",
        data={"step": step, "split": split, **values},
    )


def events_after(session: Session, job_id: str, after_pk: int, limit: int = 500) -> list[JobEvent]:
    """Events in chronological order from a position, for streams."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.pk > after_pk).order_by(JobEvent.pk).limit(limit)
    return list(session.scalars(stmt))


def event_position(session: Session, job_id: str, event_id: str | None) -> int:
    """The position of one of the job's events in its stream, for a stream that resumes
    after it (Server-Sent Events' `Last-Event-ID`). No id, an unknown one or another
    job's event: 0, the beginning."""
    if not event_id:
        return 0
    return session.scalar(select(JobEvent.pk).where(JobEvent.id == event_id, JobEvent.job_id == job_id)) or 0


def poll_feeds(session: Session, positions: Mapping[str, int], limit: int) -> tuple[dict[str, str], list[JobEvent]]:
    """One poll for the event streams of many jobs: their statuses, then each one's
    events after its position, oldest first (at most `limit` in all). The statuses are
    read first: a job that was already over has its last event among those read next,
    so a stream that ends at such a status has missed nothing."""
    statuses = {
        job_id: status for job_id, status in session.execute(select(Job.id, Job.status).where(Job.id.in_(positions)))
    }
    after = or_(*(and_(JobEvent.job_id == job_id, JobEvent.pk > pk) for job_id, pk in positions.items()))
    return statuses, list(session.scalars(select(JobEvent).where(after).order_by(JobEvent.pk).limit(limit)))


def _of_org(job_id: str, org_id: str) -> ColumnElement[bool]:
    """The job is the organization's: a condition of the same query, not a query first."""
    return exists().where(Job.id == job_id, Job.organization_id == org_id)


def _metrics(job_id: str) -> Select[JobMetric]:
    return select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.split, JobMetric.step)


def metrics_for(session: Session, job_id: str) -> list[JobMetric]:
    return list(session.scalars(_metrics(job_id)))


def org_job_metrics(session: Session, org_id: str, job_id: str, split: Split | None = None) -> list[JobMetric]:
    """`metrics_for` the organization's job (of one split, when given), in one query;
    empty for a job that is not the organization's (`core.jobs.get_job` tells the two
    apart)."""
    stmt = _metrics(job_id).where(_of_org(job_id, org_id))
    if split is not None:
        stmt = stmt.where(JobMetric.split == split)
    return list(session.scalars(stmt))


def list_events(
    session: Session, org_id: str, job_id: str, after: str | None, limit: int
) -> tuple[list[JobEvent], bool]:
    """The organization's job's events, newest first, as OpenAI pages them, in one
    query; empty for a job that is not the organization's (`core.jobs.get_job` tells the
    two apart)."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, _of_org(job_id, org_id))
    return page(session, stmt, JobEvent, after, limit)
