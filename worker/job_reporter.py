"""The job's record as the recipe's reporter (worker.training.reporting.Reporter):
events, metrics, the runtime, progress, checkpoints and whether to stop (cancelled, pause asked
for, lease lost, the worker shutting down), each in its own short transaction so the API sees them as training
runs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from core import jobs, leases
from core.db import session_scope
from core.events import add_event, record_metric
from core.models import Job
from core.states import Level, StopReason
from worker.checkpoint_storage import publish_checkpoint


class JobReporter:
    saves_checkpoints = True

    def __init__(
        self, job: Job, owner: str, lease_lost: threading.Event, keep_checkpoints: int, shutdown: threading.Event
    ) -> None:
        """`lease_lost`: set by the heartbeat renewing the lease when it finds it lost
        (worker.heartbeat), at once; the job's record says so too, at the next step."""
        self.job, self.job_id, self.owner, self.lease_lost = job, job.id, owner, lease_lost
        self.keep_checkpoints, self.shutdown = keep_checkpoints, shutdown

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            add_event(session, self.job_id, message, level=level, data=data)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        with session_scope() as session:
            record_metric(session, self.job_id, step, values, split)

    def runtime(self, description: dict[str, Any]) -> None:
        with session_scope() as session:
            jobs.record_runtime(session, self.job_id, description)

    def progress(self, step: int, total_steps: int, epochs: int, seconds_per_step: float | None) -> None:
        with session_scope() as session:
            jobs.record_progress(session, self.job_id, step, total_steps, epochs, seconds_per_step)

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None:
        publish_checkpoint(self.job, self.owner, step, directory, metrics, self.keep_checkpoints)

    def stop_reason(self) -> StopReason | None:
        # The job's record first: a cancel also ends the lease's renewals (the heartbeat
        # then reports it lost), and must read as the cancel it is.
        with session_scope() as session:
            reason = leases.stop_reason(session, self.job_id, self.owner)
        if reason is None and self.lease_lost.is_set():
            reason = "lease_lost"
        # A cancel, a lost lease or a pause says more about the job than the stop does.
        return reason or ("shutdown" if self.shutdown.is_set() else None)
