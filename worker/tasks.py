"""Celery tasks. A message carries only a job id; the job itself is read from the
database, which is the source of truth."""

from __future__ import annotations

from core.queue import RUN_JOB_TASK, get_celery

app = get_celery()


@app.task(name=RUN_JOB_TASK, acks_late=True)
def run_job(job_id: str) -> None:
    # torch and transformers load in the worker process when a job runs, not at import.
    from worker.runner import execute_job

    execute_job(job_id)
