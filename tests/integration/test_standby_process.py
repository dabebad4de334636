"""Standby job processes (FTSVC_STANDBY_PROCESS, `auto`: on for a worker with GPUs), with
a real worker training real jobs: the worker starts a standby for its GPU, and a job the
next one (which does its imports while the job runs); each job on that GPU runs in one; a standby that died is
replaced, and a worker that stops leaves no process behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from core.queue import RUN_JOB_TASK, get_celery
from tests.conftest import TEST_ORG, Workers
from tests.faults.conftest import attempts
from tests.faults.test_worker_faults import train_losses, wait_until
from tests.helpers import EXAMPLES, all_events, unsent_queued_job, upload_ok, wait_for
from worker.job_process import STANDBY_FLAG

pytestmark = pytest.mark.slow

# A training queue of this module's own: its worker alone takes these jobs, whatever
# other workers the session runs. The worker describes one GPU (its jobs train on this
# machine's CPU), so the standby's default turns on, keyed by that GPU.
WORKER_ENV = {
    "FTSVC_TRAINING_QUEUE": "ops-standby",
    "FTSVC_WORKER_DEVICES": json.dumps([{"name": "Fake GPU", "memory_gib": 22}]),
    "FTSVC_STANDBY_PROCESS": "auto",
}


class StandbyWorker:
    """The training worker, and the processes of the jobs it ran."""

    def __init__(self, client: Any, training_file: str) -> None:
        self.client, self.training_file = client, training_file
        self.workers = Workers()
        self.name = self.workers.start([WORKER_ENV["FTSVC_TRAINING_QUEUE"]], **WORKER_ENV)
        self.process = psutil.Process(self.workers.processes[self.name].pid)
        self.job_pids: set[int] = set()

    def send_job(self, steps: int) -> str:
        job_id = unsent_queued_job(TEST_ORG, self.training_file, qlora={"training": {"max_steps": steps}})
        get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=WORKER_ENV["FTSVC_TRAINING_QUEUE"])
        return job_id

    def started(self, job_id: str) -> dict[str, Any]:
        """The data of the job's process's first event, and that process's pid (waits for it)."""

        def event() -> dict[str, Any] | None:
            said = [e for e in all_events(self.client, job_id) if e["message"].startswith("Job process ")]
            return said[0] if said else None

        started = wait_until(event, 120, "the job's process")
        pid = int(started["message"].split()[2])
        self.job_pids.add(pid)
        return started["data"] | {"pid": pid}  # type: ignore[no-any-return]

    def run_job(self) -> dict[str, Any]:
        """A two-step job, run to its end: what its process's first event says."""
        job_id = self.send_job(2)
        assert wait_for(self.client, job_id, {"succeeded", "failed"})["status"] == "succeeded"
        return self.started(job_id)

    def standby(self) -> psutil.Process:
        """Its standby process (waits for it: one starts with each job), not one that
        ran a job (and may still be ending)."""

        def waiting() -> psutil.Process | None:
            live = [p for p in self.process.children() if p.pid not in self.job_pids and is_live_standby(p)]
            assert len(live) <= 1, live
            return live[0] if live else None

        return wait_until(waiting, 30, "a standby process")


def is_live_standby(process: psutil.Process) -> bool:
    try:
        return STANDBY_FLAG in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # a job's process that just ended
        return False


@pytest.fixture(scope="module")
def worker(client_module: Any, tiny_model: Path) -> Iterator[StandbyWorker]:
    training_file = upload_ok(client_module, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    worker = StandbyWorker(client_module, training_file)
    yield worker
    for name in list(worker.workers.processes):
        worker.workers.stop(name)


def test_jobs_run_in_standbys_the_first_started_with_the_worker(worker: StandbyWorker) -> None:
    started_with_the_worker = worker.standby()
    assert started_with_the_worker.environ()["CUDA_VISIBLE_DEVICES"] == "0"
    first = worker.run_job()
    assert first["standby_process"] is True and first["pid"] == started_with_the_worker.pid
    assert first["cuda_visible_devices"] == "0"
    standby = worker.standby()  # the one the first job started
    second = worker.run_job()
    assert second["standby_process"] is True and second["pid"] == standby.pid
    assert worker.standby().pid != standby.pid  # and it started the next one


def test_a_standby_that_died_is_replaced(worker: StandbyWorker) -> None:
    killed = worker.standby()
    killed.kill()
    wait_until(lambda: killed.status() == psutil.STATUS_ZOMBIE, 10, "the standby to die")  # the worker reaps it
    # The next job runs, in a new process or in the standby that replaced the dead one
    # (when the last job's end, which replaces it, came after the kill).
    assert worker.run_job()["pid"] != killed.pid
    assert worker.standby().pid != killed.pid


def test_a_worker_stopped_mid_job_gives_it_back_and_leaves_no_process_behind(worker: StandbyWorker) -> None:
    waiting = worker.standby()
    job_id = worker.send_job(500)
    job = worker.started(job_id)
    assert job["standby_process"] is True and job["pid"] == waiting.pid
    wait_until(lambda: train_losses(worker.client, job_id), 60, "a first step")
    standby = worker.standby()  # the next job's, started with this one
    worker.workers.stop(worker.name)
    assert not psutil.pid_exists(standby.pid) and not psutil.pid_exists(job["pid"])
    # The job in the standby's process stopped as any job's does: given back at a step
    # (queued again, where another worker of the session may have taken it up since).
    assert attempts(job_id)[0]["outcome"] == "worker_stopped"
    assert any(
        e["message"].startswith("The worker was asked to stop at step") for e in all_events(worker.client, job_id)
    )
    worker.client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")  # no other worker takes it up
