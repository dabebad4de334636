"""Job states and the only allowed transitions between them; why a run stops early;
the levels of a job's events. No database here: the training recipe uses it too."""

from enum import StrEnum
from typing import Literal


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobStatus
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.VALIDATING_FILES: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.FAILED, S.CANCELLED}),
    # running -> queued: the lease expired (the worker died) and the job will resume;
    # running -> paused: the worker checkpointed and stopped at the user's request.
    S.RUNNING: frozenset({S.QUEUED, S.PAUSED, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.PAUSED: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
ACTIVE = frozenset(JobStatus) - TERMINAL

# Why a run stops before the end of its training: the job was cancelled, a pause was
# asked for (the run checkpoints first), the run's lease was lost (it was presumed
# dead and replaced), or its worker is shutting down (the run checkpoints first and
# the job goes back to the queue).
StopReason = Literal["cancel", "pause", "lease_lost", "shutdown"]

# How much a job's event matters to its reader.
Level = Literal["info", "warn", "error"]


class MergeStatus(StrEnum):
    """A merge operation (core.merges): an adapter merged into its full-precision base."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


M = MergeStatus
MERGE_TRANSITIONS: dict[MergeStatus, frozenset[MergeStatus]] = {
    M.QUEUED: frozenset({M.RUNNING, M.FAILED, M.CANCELLED}),
    # running -> queued: its worker was stopped or lost; a merge has no partial state,
    # so the next attempt starts it again.
    M.RUNNING: frozenset({M.QUEUED, M.SUCCEEDED, M.FAILED, M.CANCELLED}),
    M.SUCCEEDED: frozenset(),
    M.FAILED: frozenset(),
    M.CANCELLED: frozenset(),
}
MERGE_TERMINAL = frozenset(s for s, targets in MERGE_TRANSITIONS.items() if not targets)


# An evaluation (core.evaluations) runs as a merge does, on a training worker under a
# lease: the same states and moves.
EvaluationStatus = MergeStatus
EVALUATION_TRANSITIONS = MERGE_TRANSITIONS
EVALUATION_TERMINAL = MERGE_TERMINAL
