"""Celery entry point: `celery -A worker.celery_app worker -Q training --pool threads`
(or `-Q preflight`, which carries webhook deliveries too unless FTSVC_WEBHOOK_QUEUE
names a queue of their own)."""

import logging
from typing import Any

from celery import signals

from core import logs
from core.queue import get_celery
from core.settings import get_settings
from worker.job_processes import job_processes

app = get_celery()

import worker.preflight  # noqa: E402,F401  (registers the tasks on the app)
import worker.tasks  # noqa: E402,F401
import worker.webhooks  # noqa: E402,F401


@signals.setup_logging.connect
def _configure_logging(loglevel: int | None = None, **_: Any) -> None:
    # A receiver here replaces Celery's own logging set-up: the worker's lines take the
    # service's format, and a task's lines carry its job's id (worker.tasks binds it).
    logs.configure(loglevel or logging.INFO)


@signals.worker_shutting_down.connect
def _stop_jobs(**_: Any) -> None:
    # Celery's warm shutdown would wait for whole jobs: ask them to checkpoint and give
    # their jobs back instead, within the grace period.
    job_processes.stop(get_settings().worker_stop_grace_seconds)
