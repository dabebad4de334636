"""The pre-flight queue's tasks: a job's pre-flight and file previews (CPU work with the
base model's tokenizer). The worker process is long-lived, so tokenizers and token
statistics stay cached between tasks."""

from __future__ import annotations

import logging

from celery import Task

from core import job_preflight, logs, previews
from core.outages import outage
from core.queue import PREFLIGHT_JOB_TASK, PREVIEW_FILE_TASK, get_celery

app = get_celery()
log = logging.getLogger("ftsvc.preflight")


# While the database or the broker is away, a pre-flight waits for it (the job is not
# failed for an outage): the message is sent again after this many seconds, until it runs.
OUTAGE_RETRY_SECONDS = 10


@app.task(name=PREFLIGHT_JOB_TASK, acks_late=True, bind=True, max_retries=None)
def preflight_job(self: Task[[str], None], job_id: str) -> None:
    with logs.bound(job_id=job_id):
        try:
            job_preflight.run_preflight(job_id)
        except Exception as exc:
            if outage(exc) is not None:
                log.warning("pre-flight of job %s waits for an outage to end: %s", job_id, exc)
                raise self.retry(exc=exc, countdown=OUTAGE_RETRY_SECONDS) from exc
            log.exception("pre-flight of job %s failed", job_id)
            message = f"The pre-flight failed unexpectedly ({type(exc).__name__}: {exc})"
            job_preflight.fail(job_id, "preflight_failed", message, None)


@app.task(name=PREVIEW_FILE_TASK, acks_late=True)
def preview_file(preview_id: str) -> None:
    previews.compute(preview_id)
