"""The Celery app, configured once for both sides: the API only publishes job ids to
it, the worker registers its tasks on it. Messages carry a job id and nothing else;
Postgres is the source of truth."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from functools import lru_cache
from typing import cast

import redis
from amqp.exceptions import ChannelError
from celery import Celery
from kombu import Connection
from kombu.transport import virtual

from core.settings import get_settings

RUN_JOB_TASK = "ftsvc.run_job"
# A merge (core.merges) loads a full-precision model: the training queue's GPU workers run it.
RUN_MERGE_TASK = "ftsvc.run_merge"
# So does an evaluation (core.evaluations): the base model with and without an adapter.
RUN_EVALUATION_TASK = "ftsvc.run_evaluation"
# The pre-flight queue's tasks: CPU work with the base model's tokenizer, which the API
# process never loads (it imports neither torch nor transformers).
PREFLIGHT_JOB_TASK = "ftsvc.preflight_job"
PREVIEW_FILE_TASK = "ftsvc.preview_file"
# A webhook delivery (core.webhook_delivery): an HTTP request, on the webhook queue (by
# default the pre-flight queue, whose light worker runs everywhere the service does).
DELIVER_WEBHOOK_TASK = "ftsvc.deliver_webhook"
# A key the reconciler keeps in a Redis broker: when it is gone, so is everything the
# broker held (FLUSHALL, a restart without persistence), queued messages included.
BROKER_MARKER = "ftsvc:broker-marker"
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
        task_routes={
            RUN_JOB_TASK: {"queue": settings.training_queue},
            RUN_MERGE_TASK: {"queue": settings.training_queue},
            RUN_EVALUATION_TASK: {"queue": settings.training_queue},
            PREFLIGHT_JOB_TASK: {"queue": settings.preflight_queue},
            PREVIEW_FILE_TASK: {"queue": settings.preflight_queue},
            DELIVER_WEBHOOK_TASK: {"queue": settings.webhook_queue},
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    if _is_redis(settings.broker_url):  # the SQLAlchemy transport takes no such options
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.broker_visibility_timeout,
            # Look for unacknowledged messages past the timeout often enough for the
            # timeout to mean what it says (kombu's default sweep is every 100 s).
            "unacked_restore_interval": max(1.0, min(10.0, settings.broker_visibility_timeout / 2)),
            "unacked_restore_throttle": 1,
        }
    return app


def _is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://"))


def _redis_broker() -> redis.Redis | None:
    url = get_settings().broker_url
    if not _is_redis(url):
        return None
    return redis.Redis.from_url(url)


def broker_lost_messages() -> bool:
    """True when a Redis broker no longer has the marker `remember_broker` left (data
    lost, or never marked): every queued job's message must be sent again. The embedded
    broker keeps its messages in a file and reports False."""
    client = _redis_broker()
    if client is None:
        return False
    with client:
        return not client.exists(BROKER_MARKER)


def remember_broker() -> None:
    """Set the marker, once the jobs it protects are marked for sending."""
    client = _redis_broker()
    if client is not None:
        with client:
            client.set(BROKER_MARKER, "1")


def send(task: str, row_id: str, queue: str | None = None) -> bool:
    """Publish a task for a row (a job, a merge, an evaluation, a preview or a webhook
    delivery) by its id, to `queue` or the task's own (a job's training goes to the queue
    routing chose: core.routing); called only after the row is committed. Returns False
    when the broker cannot be reached: the row is safe in the database, and the
    maintenance loop sends it again."""
    try:
        get_celery().send_task(
            task, args=[row_id], queue=queue, retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2}
        )
    except Exception:  # broker down: the row is safe in the database
        log.exception("could not publish %s for %s", task, row_id)
        return False
    return True


def queue_names() -> tuple[str, ...]:
    """The Celery queues this service sends tasks to (get_celery's task_routes)."""
    settings = get_settings()
    return (settings.training_queue, settings.preflight_queue)


def _connection(timeout: float) -> Connection:
    """A broker connection that tries once and gives up after `timeout` seconds."""
    connection = get_celery().connection_for_read(connect_timeout=timeout)
    connection.ensure_connection(max_retries=0, timeout=math.ceil(timeout))
    return connection


def check_broker(timeout: float) -> None:
    """Raises when the broker cannot be reached within `timeout` seconds."""
    _connection(timeout).release()


def queue_depths(queues: Iterable[str], timeout: float) -> dict[str, int]:
    """Messages waiting in each queue, as the transport counts them: the length of its
    Redis lists (every priority), or the visible rows of the embedded broker's table."""
    depths = {}
    with _connection(timeout) as connection:
        # Both transports this service runs on (Redis, SQLAlchemy) are kombu's virtual ones.
        channel = cast(virtual.Channel, connection.default_channel)
        for queue in queues:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # Redis drops an empty queue's list: nothing waits in it
                depths[queue] = 0
    return depths
