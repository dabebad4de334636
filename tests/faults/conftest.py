"""Fixtures of the tests that break things: the maintenance loop as its own process
(the reaper and the queue reconciler, as `ftsvc maintain` runs them) and a queue
without leftovers of earlier tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.jobs import transition
from core.models import Job, JobAttempt
from core.states import ACTIVE, JobStatus
from tests.conftest import DATA_DIR, ROOT


@pytest.fixture(scope="module")
def maintenance() -> Iterator[subprocess.Popen[bytes]]:
    with (DATA_DIR / "maintenance.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ftsvc.cli", "maintain", "--interval", "0.5"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def empty_queue() -> None:
    """Cancel what earlier tests left queued or running, so only these tests' jobs run."""
    with session_scope() as session:
        for job_id in session.scalars(select(Job.id).where(Job.status.in_([s.value for s in ACTIVE]))).all():
            transition(session, job_id, JobStatus.CANCELLED, message="Cancelled before the fault tests")


def attempts(job_id: str) -> list[dict[str, Any]]:
    """The job's lease history, in order."""
    with session_scope() as session:
        rows = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number))
        return [
            {
                "number": a.number,
                "owner": a.lease_owner,
                "started_at": a.started_at,
                "ended_at": a.ended_at,
                "outcome": a.outcome,
                "resumed_from_step": a.resumed_from_step,
            }
            for a in rows
        ]


def assert_no_overlap(history: list[dict[str, Any]]) -> None:
    """Each attempt started after the one before it ended (for a lost worker: after its
    lease expired), and all but the last have ended."""
    for earlier, later in zip(history, history[1:], strict=False):
        assert earlier["ended_at"] is not None, earlier
        assert later["started_at"] >= earlier["ended_at"], (earlier, later)
    assert len({a["owner"] for a in history}) == len(history)
