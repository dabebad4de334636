"""One merge in a process of its own: `python -m worker.merge_process MERGE_ID`, started
by the Celery worker like a job's process (worker.job_processes), so the worker never
imports torch and the merge's GPU and host memory (a whole full-precision model) are
returned in full when it exits. SIGTERM or SIGINT makes the merge go back to the queue
at its next phase."""

from __future__ import annotations

import sys

from worker.job_process import stop_on_signals


def main(argv: list[str]) -> int:
    stop = stop_on_signals()
    from core import logs
    from worker.merge_runner import execute_merge

    [merge_id] = argv
    logs.configure(merge_id=merge_id)  # every line of this process is the merge's
    logs.capture_output()
    execute_merge(merge_id, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
