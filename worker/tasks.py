"""Celery tasks. A message carries only a job's (or a merge's, or an evaluation's) id; the row itself is read
from the database, which is the source of truth. The worker process stays light: a
message for a job, merge or evaluation that is not queued (a duplicate, a stale one) is dropped here
at the cost of one query, and a real one runs in a process of its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from core import evaluations, jobs, leases, logs, merge_runs
from core.db import session_scope
from core.leased_runs import LeasedRuns
from core.queue import RUN_EVALUATION_TASK, RUN_JOB_TASK, RUN_MERGE_TASK, get_celery
from worker.job_processes import WorkerStopping, job_processes

app = get_celery()
log = logging.getLogger("ftsvc.worker")

# The sends of messages this worker consumed while it stopped, without running them (their
# rows were not claimed). Sent at its exit, once it consumes no more (worker.celery_app),
# not at once: in its warm shutdown it can still receive them, and would drop them again.
# (Their rows are also marked unsent: a worker that dies first leaves them to the
# maintenance loop.)
_not_run: list[Callable[[], bool]] = []


def send_back_not_run() -> None:
    while _not_run:
        _not_run.pop()()


@app.task(name=RUN_JOB_TASK, acks_late=True)
def run_job(job_id: str) -> None:
    with logs.bound(job_id=job_id):
        _run_job(job_id)


def _run_job(job_id: str) -> None:
    with session_scope() as session:
        claimable = leases.is_claimable(session, job_id)
        if not claimable:
            leases.note_dropped_delivery(session, job_id)
        gpus = jobs.requested_gpus(session, job_id) if claimable else 0
    if not claimable:
        log.info("job %s is not queued; message dropped", job_id)
        return
    try:
        status = job_processes.run(job_id, gpus=gpus)
    except WorkerStopping:
        with session_scope() as session:
            jobs.forget_sent_messages(session, job_id)
        _not_run.append(partial(jobs.publish, job_id))
        log.info("job %s: the worker stopped before it got its GPUs; sent again as the worker exits", job_id)
        return
    if status != 0:
        log.warning("job %s: its process exited with status %d", job_id, status)


def _run_leased(runs: LeasedRuns[Any], row_id: str, module: str) -> None:
    """A merge's or an evaluation's message: its process, if it is queued. The task's
    log lines carry the row's id (`merge_id`, `evaluation_id`)."""
    with logs.bound(**{f"{runs.noun}_id": row_id}):
        with session_scope() as session:
            claimable = runs.is_claimable(session, row_id)
        if not claimable:
            log.info("%s %s is not queued; message dropped", runs.noun, row_id)
            return
        try:
            status = job_processes.run(row_id, module=module)
        except WorkerStopping:
            with session_scope() as session:
                runs.forget_sent_messages(session, row_id)
            _not_run.append(partial(runs.publish, row_id))
            log.info("%s %s: the worker stopped before it got a GPU; sent again as the worker exits", runs.noun, row_id)
            return
        if status != 0:
            log.warning("%s %s: its process exited with status %d", runs.noun, row_id, status)


@app.task(name=RUN_MERGE_TASK, acks_late=True)
def run_merge(merge_id: str) -> None:
    _run_leased(merge_runs.RUNS, merge_id, "worker.merge_process")


@app.task(name=RUN_EVALUATION_TASK, acks_late=True)
def run_evaluation(evaluation_id: str) -> None:
    _run_leased(evaluations.RUNS, evaluation_id, "worker.evaluation_process")
