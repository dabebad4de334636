"""What every run of a leased operation (a merge, an evaluation: core.leased_runs) does
in its process beside its own work: claim the operation under a lease kept alive by a
heartbeat, in a working directory of its own; stop between phases when its worker is
stopping (the operation goes back to the queue) or its lease is gone (cancelled, or
taken over); and end a failure with its code and message."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic

from core.db import session_scope
from core.errors import ServiceError
from core.leased_runs import LeasedRuns, Row
from core.states import Level
from worker.heartbeat import Heartbeat, new_owner
from worker.training.failures import JobFailure

log = logging.getLogger("ftsvc.worker")


class Stopped(Exception):
    """The run must stop between phases: its worker is stopping, or its lease is gone."""

    def __init__(self, shutdown: bool) -> None:
        super().__init__("shutdown" if shutdown else "lease lost")
        self.shutdown = shutdown


class OperationLog:
    """The operation's log, each entry in its own transaction (an EventLog: what model
    downloads report to)."""

    def __init__(self, runs: LeasedRuns[Any], row_id: str) -> None:
        self.runs, self.row_id = runs, row_id

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        with session_scope() as session:
            self.runs.add_event(session, self.row_id, message, level=level, data=data)


class Run(Generic[Row]):
    """One run of the operation `row` under `owner`'s lease, and its log."""

    def __init__(self, runs: LeasedRuns[Row], row: Row, owner: str, heartbeat: Heartbeat, shutdown: threading.Event):
        self.runs: LeasedRuns[Row] = runs
        self.row: Row = row
        self.owner, self.heartbeat, self.shutdown = owner, heartbeat, shutdown
        self.log = OperationLog(runs, row.id)

    def between_phases(self) -> None:
        if self.heartbeat.lost.is_set():
            raise Stopped(shutdown=False)
        if self.shutdown.is_set():
            raise Stopped(shutdown=True)

    def stopped(self, stop: Stopped) -> bool:
        """End a run that stopped: the operation back to the queue (and sent again) when
        its worker is stopping, else only the lease let go. Returns whether it was given back."""
        with session_scope() as session:
            given_back = stop.shutdown and self.runs.give_back(session, self.row.id, self.owner)
            if not given_back:
                self.runs.release(session, self.row.id, self.owner)
        if given_back:
            self.runs.publish(self.row.id)
        return given_back

    def failed(self, error: dict[str, Any], exc: BaseException) -> None:
        with session_scope() as session:
            details = error | {"exception": f"{type(exc).__name__}: {exc}"}
            self.runs.fail(session, self.row.id, self.owner, error, details)


def execute(
    runs: LeasedRuns[Row],
    row_id: str,
    shutdown: threading.Event,
    work: Callable[[Run[Row], Path], None],
) -> None:
    """Claim the operation and do `work` under its lease, in a temporary directory that
    is removed afterwards; a message for an operation that is not queued is dropped."""
    owner = new_owner()
    with session_scope() as session:
        row = runs.claim(session, row_id, owner, socket.gethostname())
    if row is None:
        log.info("%s %s is not queued; message dropped", runs.noun, row_id)
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"{row_id}-"))
    try:
        with Heartbeat(row_id, owner, renew=runs.renew) as heartbeat:
            work(Run(runs, row, owner, heartbeat, shutdown), workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def failure(exc: BaseException, noun: str, memory: str) -> dict[str, Any]:
    """The error of an operation that raised `exc`: code, message and param. `memory`
    says what did not fit when the device ran out of memory."""
    if isinstance(exc, ServiceError):
        return {"code": exc.code, "message": exc.message, "param": exc.param}
    if isinstance(exc, JobFailure):
        return {"code": exc.code, "message": exc.message, "param": exc.param}
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return {"code": "out_of_memory", "message": f"Out of memory: {memory}", "param": None}
    message = f"{noun.capitalize()} failed ({type(exc).__name__}: {exc})"
    return {"code": f"{noun}_failed", "message": message, "param": None}
