"""One job in a process of its own: `python -m worker.job_process JOB_ID` (started by
the Celery worker, worker.job_processes). SIGTERM or SIGINT, to this process or to the
worker's whole process group, asks the run to save a checkpoint after its current step
and give the job back to the queue.

`python -m worker.job_process --standby` is the same process started ahead of its job
(worker.standbys): it imports the training stack, then waits for a job id on stdin and
runs that job as above. EOF instead of a job id, or a stop while it waits, ends it with
status 0."""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import threading
from types import FrameType

from worker.training import job_clock  # imported first: a job's start-up times count from here

STANDBY_FLAG = "--standby"
# What a job's run imports (worker.runner's `_run`): torch, transformers, peft (and with
# it bitsandbytes, which asks CUDA for its devices: the worker starts a standby with the
# CUDA_VISIBLE_DEVICES of the job it will get), trl and datasets.
TRAINING_STACK = (
    "worker.runner",
    "worker.checkpoint_storage",
    "worker.model_download",
    "worker.publish",
    "worker.ranks",
    "worker.training.recipe",
    "worker.training.runtime",
    "worker.training.tracking",
)


def stop_on_signals() -> threading.Event:
    """Installed before anything heavy is imported, so a stop that comes while torch
    loads is not lost (the default action would kill the process mid-claim)."""
    stop = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    return stop


def await_job(stop: threading.Event) -> str | None:
    """The job id the worker writes on stdin; None at EOF or once `stop` is set (a
    signal wakes the wait through the wakeup fd). A job id already written wins over a
    stop: the worker hands the job over before it signals, and the run then claims the
    job and gives it back as a stopped run does."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    try:
        while True:
            ready, _, _ = select.select([sys.stdin, wake_read], [], [], 0 if stop.is_set() else None)
            if sys.stdin in ready:
                return sys.stdin.readline().strip() or None
            if stop.is_set():
                return None
            os.read(wake_read, 512)  # a signal that was not a stop
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)


def standby(stop: threading.Event) -> str | None:
    """Import the training stack, then wait for the job; its clock starts on handover."""
    from core import logs

    logs.configure()  # the imports' warnings in the service's format, before the job's id is known
    for module in TRAINING_STACK:
        importlib.import_module(module)
    job_id = await_job(stop)
    if job_id is not None:
        job_clock.mark_started()
    return job_id


def run_job(job_id: str, stop: threading.Event) -> None:
    from core import logs
    from worker.runner import execute_job

    logs.configure(job_id=job_id)  # every line of this process is the job's
    logs.capture_output()
    execute_job(job_id, stop)


def main(argv: list[str]) -> int:
    stop = stop_on_signals()
    if argv == [STANDBY_FLAG]:
        job_id = standby(stop)
        if job_id is None:
            return 0
    else:
        [job_id] = argv
    run_job(job_id, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
