"""Celery entry point: `celery -A worker.celery_app worker -Q training` (or `-Q preflight`)."""

from core.queue import get_celery

app = get_celery()

import worker.preflight  # noqa: E402,F401  (registers the tasks on the app)
import worker.tasks  # noqa: E402,F401
