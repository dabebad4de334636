"""The Celery app, configured once for both sides: the API only publishes job ids to
it, the worker registers its tasks on it. Messages carry a job id and nothing else;
Postgres is the source of truth."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from core.settings import get_settings

RUN_JOB_TASK = "ftsvc.run_job"
log = logging.getLogger(__name__)


@lru_cache
def get_celery() -> Celery:
    settings = get_settings()
    if settings.broker_url.startswith("sqla+sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("ftsvc", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=settings.training_queue,
        task_routes={RUN_JOB_TASK: {"queue": settings.training_queue}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def enqueue_job(job_id: str) -> bool:
    """Publish a job id; called only after the job's row is committed. Returns False
    when the broker cannot be reached: the job stays `queued` in the database."""
    try:
        get_celery().send_task(
            RUN_JOB_TASK, args=[job_id], retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2}
        )
    except Exception:  # broker down: the job is safe in the database
        log.exception("could not publish job %s", job_id)
        return False
    return True
