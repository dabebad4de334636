"""The Celery worker's side of running jobs: each job in a new process of its own
(`python -m worker.job_process`), so the worker itself never imports torch and every
job's GPU and host memory is returned in full when its process exits; and the stop of
those processes when the worker shuts down."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("ftsvc.worker")


class JobProcesses:
    """The job processes this worker runs (one per pool thread). `stop` asks each to
    checkpoint and give its job back; one still running `grace` seconds later is
    killed, and its job is left to the lease reaper."""

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._deadline: float | None = None

    def run(self, job_id: str, module: str = "worker.job_process") -> int:
        """Run the job's process (`python -m <module> <job_id>`; a merge's is
        worker.merge_process) to its end; returns its exit status."""
        process = subprocess.Popen([sys.executable, "-m", module, job_id])
        with self._lock:
            self._running.add(process)
            stopping = self._deadline is not None
        if stopping:  # the worker began to stop while this job was being handed over
            process.send_signal(signal.SIGTERM)
        try:
            return self._wait(process, job_id)
        finally:
            with self._lock:
                self._running.discard(process)

    def _wait(self, process: subprocess.Popen[bytes], job_id: str) -> int:
        while True:
            try:
                return process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    log.warning("job %s: its process did not stop within the grace period; killed", job_id)
                    process.kill()

    def stop(self, grace: float) -> None:
        """Called from the worker's signal handler: only flags and signals, no waiting."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + grace
            running = list(self._running)
        for process in running:
            process.send_signal(signal.SIGTERM)


job_processes = JobProcesses()
