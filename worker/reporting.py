"""The worker's side of a job's record: events, metrics and the cancellation flag,
each written in its own short transaction so the API sees them as training runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from core.db import session_scope
from core.events import Level, add_event, record_metric
from core.models import Job
from core.states import JobStatus


class JobReporter:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            add_event(session, self.job_id, message, level=level, data=data)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        with session_scope() as session:
            record_metric(session, self.job_id, step, values, split)

    def update(self, **values: Any) -> None:
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def cancelled(self) -> bool:
        with session_scope() as session:
            status = session.scalar(select(Job.status).where(Job.id == self.job_id))
        return status == JobStatus.CANCELLED
