"""Celery tasks. A message carries only a job's (or a merge's) id; the row itself is read
from the database, which is the source of truth. The worker process stays light: a
message for a job or merge that is not queued (a duplicate, a stale one) is dropped here
at the cost of one query, and a real one runs in a process of its own."""

from __future__ import annotations

import logging

from core import jobs, leases, merge_runs
from core.db import session_scope
from core.queue import RUN_JOB_TASK, RUN_MERGE_TASK, get_celery
from worker.job_processes import WorkerStopping, job_processes

app = get_celery()
log = logging.getLogger("ftsvc.worker")


@app.task(name=RUN_JOB_TASK, acks_late=True)
def run_job(job_id: str) -> None:
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
        log.info("job %s: the worker stopped before it got its GPUs; it goes back to the queue", job_id)
        return
    if status != 0:
        log.warning("job %s: its process exited with status %d", job_id, status)


@app.task(name=RUN_MERGE_TASK, acks_late=True)
def run_merge(merge_id: str) -> None:
    with session_scope() as session:
        claimable = merge_runs.is_claimable(session, merge_id)
    if not claimable:
        log.info("merge %s is not queued; message dropped", merge_id)
        return
    try:
        status = job_processes.run(merge_id, module="worker.merge_process")
    except WorkerStopping:
        with session_scope() as session:
            merge_runs.forget_sent_messages(session, merge_id)
        log.info("merge %s: the worker stopped before it got a GPU; it goes back to the queue", merge_id)
        return
    if status != 0:
        log.warning("merge %s: its process exited with status %d", merge_id, status)
