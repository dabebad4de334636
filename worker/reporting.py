"""The worker's side of a job's record: events, metrics and the cancellation flag,
each written in its own short transaction so the API sees them as training runs."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select, update

from core.db import session_scope
from core.events import Level, add_event, record_metric
from core.models import Job
from core.states import JobStatus


class Reporter(Protocol):
    """Where a training run reports to: the job's record, or the console."""

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None: ...

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None: ...

    def update(self, **values: Any) -> None: ...

    def cancelled(self) -> bool: ...


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


class ConsoleReporter:
    """The reporter's interface without a database: prints events and metrics, never
    cancels. For runs of the recipe outside a job (benchmarks, local experiments)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.metrics: list[tuple[int, dict[str, Any]]] = []

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        print(f"{self.prefix}[{level}] {message}", flush=True)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        self.metrics.append((step, {"split": split, **values}))

    def update(self, **values: Any) -> None:
        print(f"{self.prefix}[job] {values}", flush=True)

    def cancelled(self) -> bool:
        return False
