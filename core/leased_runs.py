"""The run of an operation that a training worker performs on a row of its own (a merge,
an evaluation), on the record: its messages to the training queue, the lease of the
worker that runs it (as a job's, core.leases: claimed with one conditional UPDATE,
renewed by a heartbeat, every outcome conditioned on still holding it), its log, and
what the maintenance loop does for runs whose worker died or whose message was lost.

Such an operation has no partial state worth keeping: one whose worker was stopped or
lost runs again from the start, at most `max_attempts` runs in all."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from core.db import session_scope
from core.ids import now
from core.leases import deadline
from core.models import Evaluation, Merge
from core.queue import send
from core.settings import get_settings
from core.states import Level, MergeStatus
from core.transitions import move as move_row
from core.transitions import rows_matched

Row = TypeVar("Row", Merge, Evaluation)
# Merges and evaluations share their states (core.states).
Status = MergeStatus


class EventWriter(Protocol):
    """Adds an entry to the log of the operation `row_id`."""

    def __call__(
        self, session: Session, row_id: str, message: str, /, *, level: Level = ..., data: dict[str, Any] | None = ...
    ) -> object: ...


class LeasedRuns(Generic[Row]):
    """The runs of the operations of `table` (`noun` names one in their log), sent as
    `task` to the training queue."""

    def __init__(
        self,
        table: type[Row],
        transitions: Mapping[Status, frozenset[Status]],
        task: str,
        noun: str,
        add_event: EventWriter,
    ) -> None:
        self.table: type[Row] = table
        self.transitions, self.task, self.noun, self.add_event = transitions, task, noun, add_event
        self.terminal = frozenset(s for s, targets in transitions.items() if not targets)

    def move(
        self,
        session: Session,
        row_id: str,
        to: Status,
        *,
        message: str,
        level: Level = "info",
        data: dict[str, Any] | None = None,
        conditions: Sequence[ColumnElement[bool]] = (),
        **values: Any,
    ) -> bool:
        """Move the operation to `to` if its state allows it (and `conditions` hold), with an event."""
        if not move_row(session, self.table, self.transitions, row_id, to, conditions, values):
            return False
        self.add_event(session, row_id, message, level=level, data=data)
        return True

    # -- the training queue ----------------------------------------------------------------
    def publish(self, row_id: str) -> bool:
        """Send a committed, queued operation's id to the training queue, then note when."""
        if not send(self.task, row_id):
            return False
        with session_scope() as session:
            queued = self.table.status == Status.QUEUED.value
            session.execute(update(self.table).where(self.table.id == row_id, queued).values(enqueued_at=time.time()))
        return True

    def unsent(self, session: Session) -> list[str]:
        """Queued operations whose message never reached the broker, oldest first."""
        stmt = select(self.table.id).where(self.table.status == Status.QUEUED.value, self.table.enqueued_at.is_(None))
        return list(session.scalars(stmt.order_by(self.table.pk)))

    def forget_sent_messages(self, session: Session, row_id: str | None = None) -> None:
        """The broker lost its messages: every queued operation (or this one, whose
        message a stopping worker consumed without running it) must be sent again."""
        queued = self.table.status == Status.QUEUED.value
        only = [self.table.id == row_id] if row_id is not None else []
        session.execute(update(self.table).where(queued, *only).values(enqueued_at=None))

    # -- the worker's lease ----------------------------------------------------------------
    def is_claimable(self, session: Session, row_id: str) -> bool:
        return session.scalar(select(self.table.status).where(self.table.id == row_id)) == Status.QUEUED

    def claim(self, session: Session, row_id: str, owner: str, worker: str) -> Row | None:
        """queued -> running under `owner`'s lease; None when the operation is not queued
        (a duplicate or stale message, one cancelled before it started)."""
        attempt = (session.scalar(select(self.table.attempt).where(self.table.id == row_id)) or 0) + 1
        if not self.move(
            session,
            row_id,
            Status.RUNNING,
            message=f"Attempt {attempt} started on worker {worker}",
            data={"attempt": attempt, "lease_owner": owner},
            conditions=[self.table.attempt == attempt - 1],
            attempt=attempt,
            lease_owner=owner,
            lease_expires_at=deadline(),
            started_at=func.coalesce(self.table.started_at, now()),
        ):
            return None
        claimed: Row = session.scalars(select(self.table).where(self.table.id == row_id)).one()
        return claimed

    def renew(self, session: Session, row_id: str, owner: str) -> bool:
        """Extend the lease; False when it is no longer ours (cancelled, or expired and taken)."""
        renewal = (
            update(self.table)
            .where(self.table.id == row_id, self.table.lease_owner == owner, self.table.status == Status.RUNNING.value)
            .values(lease_expires_at=deadline())
        )
        return rows_matched(session, renewal) == 1

    def record_runtime(self, session: Session, row_id: str, runtime: dict[str, Any]) -> None:
        session.execute(update(self.table).where(self.table.id == row_id).values(runtime=runtime))

    @staticmethod
    def _released() -> dict[str, Any]:
        return {"lease_owner": None, "lease_expires_at": None}

    def succeed(
        self, session: Session, row_id: str, owner: str, message: str, data: dict[str, Any], **values: Any
    ) -> bool:
        """Record the outcome (`values`), if this worker still holds the lease of a running
        operation (else the caller deletes what it stored: nobody will ever name it)."""
        conditions = [self.table.lease_owner == owner]
        return self.move(
            session,
            row_id,
            Status.SUCCEEDED,
            message=message,
            data=data,
            conditions=conditions,
            **values,
            **self._released(),
        )

    def fail(self, session: Session, row_id: str, owner: str, error: dict[str, Any], details: dict[str, Any]) -> bool:
        return self.move(
            session,
            row_id,
            Status.FAILED,
            message=f"{self.noun.capitalize()} failed ({error['code']}): {error['message']}",
            level="error",
            data=details,
            conditions=[self.table.lease_owner == owner],
            error=error,
            **self._released(),
        )

    def give_back(self, session: Session, row_id: str, owner: str) -> bool:
        """The worker is stopping: running -> queued, to be sent again and run from the start."""
        return self.move(
            session,
            row_id,
            Status.QUEUED,
            message=f"The worker was asked to stop; the {self.noun} is queued again and will start over",
            level="warn",
            conditions=[self.table.lease_owner == owner],
            enqueued_at=None,
            **self._released(),
        )

    def release(self, session: Session, row_id: str, owner: str) -> None:
        """Let go of the lease of an operation that moved on without this worker (cancelled)."""
        mine = [self.table.id == row_id, self.table.lease_owner == owner]
        session.execute(update(self.table).where(*mine).values(**self._released()))

    def reap(self, session: Session) -> int:
        """Operations whose lease was not renewed in time (a worker killed, a machine
        gone): run again by the next worker, or failed after `max_attempts` runs.
        Returns how many."""
        table, current, max_attempts = self.table, time.time(), get_settings().max_attempts
        expired = session.execute(
            select(table.id, table.status, table.attempt, table.lease_owner).where(
                table.lease_owner.is_not(None), table.lease_expires_at < current
            )
        ).all()
        for row_id, status, attempt, owner in expired:
            still_expired = [table.lease_owner == owner, table.lease_expires_at < current]
            lost = f"Worker lease {owner} expired (attempt {attempt})"
            if status in self.terminal:  # cancelled while its worker died: only the lease is left
                session.execute(update(table).where(table.id == row_id, *still_expired).values(**self._released()))
            elif attempt >= max_attempts:
                message = f"{lost}; the {self.noun} ran {attempt} times, the limit (max_attempts), and is not retried"
                self.move(
                    session,
                    row_id,
                    Status.FAILED,
                    message=message,
                    level="error",
                    conditions=still_expired,
                    error={"code": "worker_lost", "message": message, "param": None},
                    **self._released(),
                )
            else:
                self.move(
                    session,
                    row_id,
                    Status.QUEUED,
                    message=f"{lost}; queued to run again",
                    level="warn",
                    conditions=still_expired,
                    enqueued_at=None,
                    **self._released(),
                )
        return len(expired)
