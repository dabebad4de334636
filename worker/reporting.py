"""The worker's side of a job's record: events, metrics, checkpoints and whether to
stop (cancelled, pause asked for, lease lost), each in its own short transaction so the
API sees them as training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import select, update

from core.db import session_scope
from core.events import Level, add_event, record_metric
from core.models import Job
from core.states import JobStatus
from worker.checkpoints import publish_checkpoint
from worker.lease import Heartbeat

StopReason = Literal["cancel", "pause", "lease_lost"]


class Reporter(Protocol):
    """Where a training run reports to: the job's record, or the console."""

    # Whether the run saves checkpoints (a job does; a benchmark run does not).
    saves_checkpoints: bool

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None: ...

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None: ...

    def update(self, **values: Any) -> None: ...

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None: ...

    def stop_reason(self) -> StopReason | None: ...


class JobReporter:
    saves_checkpoints = True

    def __init__(self, job_id: str, owner: str, heartbeat: Heartbeat, keep_checkpoints: int) -> None:
        self.job_id, self.owner, self.heartbeat = job_id, owner, heartbeat
        self.keep_checkpoints = keep_checkpoints

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            add_event(session, self.job_id, message, level=level, data=data)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        with session_scope() as session:
            record_metric(session, self.job_id, step, values, split)

    def update(self, **values: Any) -> None:
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == self.job_id).values(**values))

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None:
        publish_checkpoint(self.job_id, self.owner, step, directory, metrics, self.keep_checkpoints)

    def stop_reason(self) -> StopReason | None:
        """Checked after every optimizer step."""
        with session_scope() as session:
            status, owner, pause = session.execute(
                select(Job.status, Job.lease_owner, Job.pause_requested).where(Job.id == self.job_id)
            ).one()
        if status == JobStatus.CANCELLED:
            return "cancel"
        if self.heartbeat.lost.is_set() or owner != self.owner or status != JobStatus.RUNNING:
            return "lease_lost"
        return "pause" if pause else None


class ConsoleReporter:
    """The reporter's interface without a database: prints events and metrics, never
    stops or checkpoints. For runs of the recipe outside a job (benchmarks, experiments)."""

    saves_checkpoints = False

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.metrics: list[tuple[int, dict[str, Any]]] = []

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        print(f"{self.prefix}[{level}] {message}", flush=True)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        self.metrics.append((step, {"split": split, **values}))

    def update(self, **values: Any) -> None:
        print(f"{self.prefix}[job] {values}", flush=True)

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None:
        return None

    def stop_reason(self) -> StopReason | None:
        return None
