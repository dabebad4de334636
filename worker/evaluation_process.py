"""One evaluation in a process of its own: `python -m worker.evaluation_process ID`,
started by the Celery worker like a job's or a merge's process (worker.job_processes),
so the worker never imports torch and the model's memory is returned in full when it
exits. SIGTERM or SIGINT makes the evaluation go back to the queue before its next
example."""

from __future__ import annotations

import sys

from worker.job_process import stop_on_signals


def main(argv: list[str]) -> int:
    stop = stop_on_signals()
    from core import logs
    from worker.evaluation_runner import execute_evaluation

    [evaluation_id] = argv
    logs.configure(evaluation_id=evaluation_id)  # every line of this process is the evaluation's
    logs.capture_output()
    execute_evaluation(evaluation_id, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
