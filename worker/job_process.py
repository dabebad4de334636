"""One job in a process of its own: `python -m worker.job_process JOB_ID` (started by
the Celery worker, worker.job_processes). SIGTERM or SIGINT, to this process or to the
worker's whole process group, asks the run to save a checkpoint after its current step
and give the job back to the queue."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


def stop_on_signals() -> threading.Event:
    """Installed before anything heavy is imported, so a stop that comes while torch
    loads is not lost (the default action would kill the process mid-claim)."""
    stop = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


def main(argv: list[str]) -> int:
    stop = stop_on_signals()
    from core import logs
    from worker.runner import execute_job

    [job_id] = argv
    logs.configure(job_id=job_id)  # every line of this process is the job's
    logs.capture_output()
    execute_job(job_id, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
