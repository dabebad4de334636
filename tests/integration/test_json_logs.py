"""JSON logs (FTSVC_LOG_FORMAT=json) from a real training worker: each log line is one
JSON object, and every line logged for a job, by the worker's task thread or by the job's
own process (transformers' warnings and the Trainer's prints included), carries the job's
id as a field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.queue import RUN_JOB_TASK, get_celery
from tests.conftest import DATA_DIR, TEST_ORG, Workers
from tests.helpers import EXAMPLES, unsent_queued_job, upload_ok, wait_for

# A queue of this module's own: its worker alone takes these jobs, whatever other
# workers the session runs.
QUEUE = "ops-json-logs"


@pytest.fixture(scope="module")
def json_worker(tiny_model: Path) -> Iterator[Path]:
    """A training worker logging JSON; yields its log file."""
    workers = Workers()
    name = workers.start([QUEUE], FTSVC_LOG_FORMAT="json")
    yield DATA_DIR / f"worker-{name}.log"
    workers.stop(name)


def log_lines(log_file: Path) -> list[str]:
    """The worker's log from its first log record on: Celery prints its start-up banner
    before logging is set up, and nothing else may be anything but a JSON record."""
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return lines[first:]


def test_every_line_of_a_job_carries_its_id(client_module: Any, json_worker: Path) -> None:
    training = upload_ok(client_module, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    job_id = unsent_queued_job(TEST_ORG, training, hyperparameters={"n_epochs": 1})
    get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=QUEUE)
    assert wait_for(client_module, job_id, {"succeeded", "failed"})["status"] == "succeeded"

    records = [json.loads(line) for line in log_lines(json_worker)]  # each line one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    of_job = [record for record in records if record.get("job_id") == job_id]
    # The job's process: what transformers warns, and what the Trainer prints at each
    # logged step (captured as log lines, not stray text).
    assert [r for r in of_job if r["logger"] == "py.warnings"]
    steps = [r for r in of_job if r["logger"] == "ftsvc.stdout" and "'loss'" in r["message"]]
    assert len(steps) >= 2
    # Every record that names the job carries its id, but Celery's own lines about the
    # task (received, succeeded), which its consumer logs outside the task.
    naming = [r for r in records if job_id in r["message"] and not r["logger"].startswith("celery.")]
    assert all(r.get("job_id") == job_id for r in naming), naming
    # No progress bars: a redrawn line is no log record.
    assert not [r for r in records if "it/s]" in r["message"]]
