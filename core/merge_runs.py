"""A merge's run, on the record: its messages to the training queue, the lease of the
worker that runs it (as a job's, core.leases: claimed with one conditional UPDATE,
renewed by a heartbeat, every outcome conditioned on still holding it), its log, and
what the maintenance loop does for merges whose worker died or whose message was lost.

A merge has no partial state worth keeping: a merge whose worker was stopped or lost
runs again from the start, at most `max_attempts` runs in all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from core.db import session_scope
from core.ids import new_id, now
from core.leases import deadline
from core.models import Merge, MergeEvent
from core.queue import RUN_MERGE_TASK, send
from core.settings import get_settings
from core.states import MERGE_TERMINAL, MERGE_TRANSITIONS, Level, MergeStatus
from core.storage import StoredObject
from core.transitions import move as move_row
from core.transitions import rows_matched


def add_merge_event(
    session: Session, merge_id: str, message: str, *, level: Level = "info", data: dict[str, Any] | None = None
) -> MergeEvent:
    event = MergeEvent(id=new_id("ftmergeevent"), merge_id=merge_id, level=level, message=message, data=data)
    session.add(event)
    return event


def move(
    session: Session,
    merge_id: str,
    to: MergeStatus,
    *,
    message: str,
    level: Level = "info",
    data: dict[str, Any] | None = None,
    conditions: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move a merge to `to` if its state allows it (and `conditions` hold), with an event."""
    if not move_row(session, Merge, MERGE_TRANSITIONS, merge_id, to, conditions, values):
        return False
    add_merge_event(session, merge_id, message, level=level, data=data)
    return True


# -- the training queue --------------------------------------------------------------------
def publish(merge_id: str) -> bool:
    """Send a committed, queued merge's id to the training queue, then note when."""
    if not send(RUN_MERGE_TASK, merge_id):
        return False
    with session_scope() as session:
        queued = Merge.status == MergeStatus.QUEUED.value
        session.execute(update(Merge).where(Merge.id == merge_id, queued).values(enqueued_at=time.time()))
    return True


def unsent_merges(session: Session) -> list[str]:
    """Queued merges whose message never reached the broker, oldest first."""
    stmt = select(Merge.id).where(Merge.status == MergeStatus.QUEUED.value, Merge.enqueued_at.is_(None))
    return list(session.scalars(stmt.order_by(Merge.pk)))


def forget_sent_messages(session: Session, merge_id: str | None = None) -> None:
    """The broker lost its messages: every queued merge (or this one, whose message a
    stopping worker consumed without running it) must be sent again."""
    queued = Merge.status == MergeStatus.QUEUED.value
    only = [Merge.id == merge_id] if merge_id is not None else []
    session.execute(update(Merge).where(queued, *only).values(enqueued_at=None))


# -- the worker's lease ----------------------------------------------------------------------
def is_claimable(session: Session, merge_id: str) -> bool:
    return session.scalar(select(Merge.status).where(Merge.id == merge_id)) == MergeStatus.QUEUED


def claim(session: Session, merge_id: str, owner: str, worker: str) -> Merge | None:
    """queued -> running under `owner`'s lease; None when the merge is not queued (a
    duplicate or stale message, a merge cancelled before it started)."""
    attempt = (session.scalar(select(Merge.attempt).where(Merge.id == merge_id)) or 0) + 1
    if not move(
        session,
        merge_id,
        MergeStatus.RUNNING,
        message=f"Attempt {attempt} started on worker {worker}",
        data={"attempt": attempt, "lease_owner": owner},
        conditions=[Merge.attempt == attempt - 1],
        attempt=attempt,
        lease_owner=owner,
        lease_expires_at=deadline(),
        started_at=func.coalesce(Merge.started_at, now()),
    ):
        return None
    return session.scalars(select(Merge).where(Merge.id == merge_id)).one()


def renew(session: Session, merge_id: str, owner: str) -> bool:
    """Extend the lease; False when it is no longer ours (cancelled, or expired and taken)."""
    renewal = (
        update(Merge)
        .where(Merge.id == merge_id, Merge.lease_owner == owner, Merge.status == MergeStatus.RUNNING.value)
        .values(lease_expires_at=deadline())
    )
    return rows_matched(session, renewal) == 1


def record_runtime(session: Session, merge_id: str, runtime: dict[str, Any]) -> None:
    session.execute(update(Merge).where(Merge.id == merge_id).values(runtime=runtime))


def _released() -> dict[str, Any]:
    return {"lease_owner": None, "lease_expires_at": None}


def succeed(session: Session, merge_id: str, owner: str, filename: str, stored: StoredObject, message: str) -> bool:
    """Publish the merged archive, if this worker still holds the lease of a running
    merge (else the caller deletes the object: nobody will ever name it)."""
    return move(
        session,
        merge_id,
        MergeStatus.SUCCEEDED,
        message=message,
        data={"bytes": stored.bytes, "sha256": stored.sha256},
        conditions=[Merge.lease_owner == owner],
        filename=filename,
        storage_key=stored.key,
        sha256=stored.sha256,
        bytes=stored.bytes,
        **_released(),
    )


def fail(session: Session, merge_id: str, owner: str, error: dict[str, Any], details: dict[str, Any]) -> bool:
    return move(
        session,
        merge_id,
        MergeStatus.FAILED,
        message=f"Merge failed ({error['code']}): {error['message']}",
        level="error",
        data=details,
        conditions=[Merge.lease_owner == owner],
        error=error,
        **_released(),
    )


def give_back(session: Session, merge_id: str, owner: str) -> bool:
    """The worker is stopping: running -> queued, to be sent again and run from the start."""
    return move(
        session,
        merge_id,
        MergeStatus.QUEUED,
        message="The worker was asked to stop; the merge is queued again and will start over",
        level="warn",
        conditions=[Merge.lease_owner == owner],
        enqueued_at=None,
        **_released(),
    )


def release(session: Session, merge_id: str, owner: str) -> None:
    """Let go of the lease of a merge that moved on without this worker (cancelled)."""
    session.execute(update(Merge).where(Merge.id == merge_id, Merge.lease_owner == owner).values(**_released()))


def reap(session: Session) -> int:
    """Merges whose lease was not renewed in time (a worker killed, a machine gone): run
    again by the next worker, or failed after `max_attempts` runs. Returns how many."""
    current, max_attempts = time.time(), get_settings().max_attempts
    expired = session.execute(
        select(Merge.id, Merge.status, Merge.attempt, Merge.lease_owner).where(
            Merge.lease_owner.is_not(None), Merge.lease_expires_at < current
        )
    ).all()
    for merge_id, status, attempt, owner in expired:
        still_expired = [Merge.lease_owner == owner, Merge.lease_expires_at < current]
        lost = f"Worker lease {owner} expired (attempt {attempt})"
        if status in MERGE_TERMINAL:  # cancelled while its worker died: only the lease is left
            session.execute(update(Merge).where(Merge.id == merge_id, *still_expired).values(**_released()))
        elif attempt >= max_attempts:
            message = f"{lost}; the merge ran {attempt} times, the limit (max_attempts), and is not retried"
            move(
                session,
                merge_id,
                MergeStatus.FAILED,
                message=message,
                level="error",
                conditions=still_expired,
                error={"code": "worker_lost", "message": message, "param": None},
                **_released(),
            )
        else:
            move(
                session,
                merge_id,
                MergeStatus.QUEUED,
                message=f"{lost}; queued to run again",
                level="warn",
                conditions=still_expired,
                enqueued_at=None,
                **_released(),
            )
    return len(expired)
