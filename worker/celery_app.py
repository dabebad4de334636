"""Celery entry point: `celery -A worker.celery_app worker -Q training --pool threads`
(or `-Q preflight`, which carries webhook deliveries too unless FTSVC_WEBHOOK_QUEUE
names a queue of their own). A worker on the training queue finds its devices when it
starts, consumes the routed queues they can serve (core.routing), runs one job per GPU (a
thread per GPU), and advertises itself in the registry while it lives."""

import logging
from typing import Any

from celery import signals
from celery.worker import WorkController

from core import logs
from core.queue import get_celery
from core.routing import queues_served
from core.settings import get_settings
from worker import devices
from worker.heartbeat import WorkerHeartbeat
from worker.job_processes import job_processes

app = get_celery()
log = logging.getLogger("ftsvc.worker")

import worker.preflight  # noqa: E402,F401  (registers the tasks on the app)
import worker.tasks  # noqa: E402,F401
import worker.webhooks  # noqa: E402,F401


@signals.setup_logging.connect
def _configure_logging(loglevel: int | None = None, **_: Any) -> None:
    # A receiver here replaces Celery's own logging set-up: the worker's lines take the
    # service's format, and a task's lines carry its job's id (worker.tasks binds it).
    logs.configure(loglevel or logging.INFO)


_registration: list[WorkerHeartbeat] = []


@signals.worker_init.connect
def _advertise(sender: WorkController, **_: Any) -> None:  # celery-types lacks its attributes
    node: Any = sender
    # Sent once -Q is applied and before the pool and the consumer exist: the queues and
    # the number of threads can still change here.
    queues = sender.app.amqp.queues
    if get_settings().training_queue not in queues.consume_from:
        return  # a pre-flight worker runs no training
    inventory = devices.discover()
    served = queues_served(inventory)
    for name in served:
        queues.select_add(name)
    if inventory.gpus:
        job_processes.gpus.configure([d.index for d in inventory.gpus])
        node.concurrency = len(inventory.gpus)  # one job per GPU, a GPU per job at least
    job_processes.prewarm()  # the first jobs' processes import the training stack meanwhile
    gpus = ", ".join(f"{d.index}: {d.name} {d.memory_bytes / 2**30:.1f} GiB" for d in inventory.gpus) or "none"
    log.info("worker %s: GPUs %s; consuming %s", node.hostname, gpus, ", ".join(served))
    heartbeat = WorkerHeartbeat(node.hostname, served, inventory)
    heartbeat.start()
    _registration.append(heartbeat)


@signals.worker_shutting_down.connect
def _stop_jobs(**_: Any) -> None:
    # Celery's warm shutdown would wait for whole jobs: ask them to checkpoint and give
    # their jobs back instead, within the grace period. The worker takes no new job.
    for heartbeat in _registration:
        heartbeat.stop()
    job_processes.stop(get_settings().worker_stop_grace_seconds)


@signals.worker_shutdown.connect
def _at_exit(**_: Any) -> None:
    # After the consumer closed and the pool's threads ended: the standby job processes
    # waiting for a next job end with the worker, and the messages it took while stopping
    # go back to the broker for another worker.
    job_processes.close()
    worker.tasks.send_back_not_run()
