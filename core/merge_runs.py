"""A merge's run, on the record (core.leased_runs: its messages to the training queue,
the lease of the worker that runs it, what the maintenance loop does for merges whose
worker died or whose message was lost) and its log.

A merge has no partial state worth keeping: a merge whose worker was stopped or lost
runs again from the start, at most `max_attempts` runs in all."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.ids import new_id
from core.leased_runs import LeasedRuns
from core.models import Merge, MergeEvent
from core.queue import RUN_MERGE_TASK
from core.states import MERGE_TRANSITIONS, Level
from core.storage import StoredObject


def add_merge_event(
    session: Session, merge_id: str, message: str, *, level: Level = "info", data: dict[str, Any] | None = None
) -> MergeEvent:
    event = MergeEvent(id=new_id("ftmergeevent"), merge_id=merge_id, level=level, message=message, data=data)
    session.add(event)
    return event


RUNS = LeasedRuns(Merge, MERGE_TRANSITIONS, RUN_MERGE_TASK, "merge", add_merge_event)
move = RUNS.move
publish = RUNS.publish
unsent_merges = RUNS.unsent
forget_sent_messages = RUNS.forget_sent_messages
is_claimable = RUNS.is_claimable
claim = RUNS.claim
renew = RUNS.renew
record_runtime = RUNS.record_runtime
fail = RUNS.fail
give_back = RUNS.give_back
release = RUNS.release
reap = RUNS.reap


def succeed(session: Session, merge_id: str, owner: str, filename: str, stored: StoredObject, message: str) -> bool:
    """Publish the merged archive, if this worker still holds the lease of a running
    merge (else the caller deletes the object: nobody will ever name it)."""
    return RUNS.succeed(
        session,
        merge_id,
        owner,
        message,
        {"bytes": stored.bytes, "sha256": stored.sha256},
        filename=filename,
        storage_key=stored.key,
        sha256=stored.sha256,
        bytes=stored.bytes,
    )
