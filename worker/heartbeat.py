"""Heartbeats: the worker's side of a job's lease, a thread that renews it while the job
runs and notices at once when it is no longer ours; and the training worker's own row
in the registry of workers and their devices (core.worker_registry), renewed while the
worker process lives."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session

from core import leases, worker_registry
from core.db import session_scope
from core.settings import get_settings
from core.worker_registry import Inventory

log = logging.getLogger("ftsvc.worker")


def new_owner() -> str:
    """Names this run: host and process, plus a nonce so a restarted process (same pid
    after a reboot, say) never passes for the one before it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# Renews a lease: (session, the row's id, the owner) -> whether it is still the owner's.
Renewal = Callable[[Session, str, str], bool]


class Heartbeat:
    """Renews the lease every lease_seconds / 4 from a daemon thread, so the lease stays
    alive through long steps, model loading and checkpoint uploads. `lost` is set when a
    renewal finds the lease gone; a database outage only delays renewals (the lease
    then expires on its own and the reaper decides). A job's lease by default; a merge's
    with `renew=core.merge_runs.renew`."""

    def __init__(self, job_id: str, owner: str, renew: Renewal = leases.renew) -> None:
        self.job_id, self.owner, self._renew = job_id, owner, renew
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        interval = get_settings().lease_seconds / 4
        while not self._stop.wait(interval):
            try:
                with session_scope() as session:
                    renewed = self._renew(session, self.job_id, self.owner)
            except Exception:
                log.exception("could not renew the lease of job %s; retrying", self.job_id)
                continue
            if not renewed:
                log.warning("job %s: lease %s lost", self.job_id, self.owner)
                self.lost.set()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


class WorkerHeartbeat:
    """Advertises a training worker (its name, queues and devices) and renews its row
    every FTSVC_WORKER_HEARTBEAT_SECONDS from a daemon thread, advertising it again if
    the row went (a worker taken for dead that was only cut off). `stop` withdraws it."""

    def __init__(self, name: str, queues: list[str], inventory: Inventory) -> None:
        self.name, self.queues, self.inventory = name, queues, inventory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-heartbeat", daemon=True)

    def _advertise(self) -> None:
        with session_scope() as session:
            worker_registry.advertise(session, self.name, socket.gethostname(), self.queues, self.inventory)

    def _run(self) -> None:
        advertised = False
        interval = get_settings().worker_heartbeat_seconds
        while True:
            try:
                if advertised:
                    with session_scope() as session:
                        advertised = worker_registry.beat(session, self.name)
                if not advertised:
                    self._advertise()
                    advertised = True
            except Exception:  # a database outage: the row ages, and the next beat renews it
                log.exception("could not renew worker %s in the registry; retrying", self.name)
            if self._stop.wait(interval):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # no renewal after the withdrawal
        try:
            with session_scope() as session:
                worker_registry.withdraw(session, self.name)
        except Exception:  # then it stops being live when its heartbeat times out
            log.exception("could not withdraw worker %s from the registry", self.name)
