"""The maintenance loop: what keeps jobs and storage consistent when processes die.

Each round, in its own transactions:
- the reaper requeues (or fails) jobs, merges and evaluations whose worker stopped
  renewing its lease;
- the reconciler sends again every waiting job (pre-flight or training) and queued merge
  or evaluation whose message never reached the broker (broker down at submission, a requeue by the
  reaper) or was lost with the broker's data; duplicates are harmless, a worker drops a
  message for a job or merge that is not queued;
- expired Idempotency-Keys and old previews are forgotten;
- temporary objects left by a process that died mid-upload are removed;
- rejected uploads past their retention are deleted, rows and bytes;
- webhook deliveries that are due (retries, messages lost) are sent to the broker again.

Every step is a conditional UPDATE or idempotent, so any number of API processes (or
`ftsvc maintain` processes) may run the loop at once.
"""

from __future__ import annotations

import logging
import threading

from core import evaluations, files, idempotency, jobs, leases, merge_runs, previews, webhooks
from core.db import session_scope
from core.queue import broker_lost_messages, remember_broker
from core.settings import get_settings
from core.storage import get_storage

log = logging.getLogger("ftsvc.maintenance")
# A preview is reused while its question is asked again soon after; then it goes.
PREVIEW_MAX_AGE_SECONDS = 3600.0


def reconcile_queue() -> int:
    """Publish the waiting jobs (pre-flight or training) and queued merges and evaluations
    that have no message in the broker; returns how many."""
    if broker_lost_messages():
        with session_scope() as session:
            jobs.forget_sent_messages(session)
            merge_runs.forget_sent_messages(session)
            evaluations.RUNS.forget_sent_messages(session)
        remember_broker()  # only once committed: a crash before this line repeats the marking
    with session_scope() as session:
        pending = jobs.unsent_jobs(session)
        merges = merge_runs.unsent_merges(session)
        unsent_evaluations = evaluations.RUNS.unsent(session)
    return (
        sum(jobs.publish(job_id, status) for job_id, status in pending)
        + sum(map(merge_runs.publish, merges))
        + sum(map(evaluations.RUNS.publish, unsent_evaluations))
    )


def run_once() -> None:
    settings = get_settings()
    with session_scope() as session:
        if reaped := leases.reap(session) + merge_runs.reap(session) + evaluations.RUNS.reap(session):
            log.warning("reaped %d jobs, merges and evaluations with expired leases", reaped)
    if sent := reconcile_queue():
        log.info("sent %d queued jobs to the broker again", sent)
    if sent := webhooks.resend_due():
        log.info("sent %d due webhook deliveries to the broker", sent)
    with session_scope() as session:
        idempotency.forget_expired(session)
        previews.forget_old(session, PREVIEW_MAX_AGE_SECONDS)
    storage = get_storage()
    storage.remove_stale_temporaries(settings.orphan_grace_seconds)
    if removed := files.remove_expired_rejected(storage):
        log.info("removed %d rejected uploads past their retention", removed)


def run_forever(stop: threading.Event, interval: float) -> None:
    """Rounds until `stop` is set; a failed round (database or broker down) is logged
    and retried at the next one."""
    while not stop.is_set():
        try:
            run_once()
        except Exception:
            log.exception("maintenance round failed; retrying in %.0f s", interval)
        stop.wait(interval)


def start_thread(interval: float) -> threading.Event:
    """Run the loop in a daemon thread (the API process); set the event to stop it."""
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(stop, interval), name="ftsvc-maintenance", daemon=True).start()
    return stop
