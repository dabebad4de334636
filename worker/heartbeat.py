"""The worker's side of a job's lease: a heartbeat thread that renews it while the job
runs, and notices at once when it is no longer ours."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.orm import Session

from core import leases
from core.db import session_scope
from core.settings import get_settings

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
