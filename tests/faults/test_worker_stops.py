"""A worker asked to stop (SIGTERM, as systemd and `docker stop` send, to its main
process or to its whole process group) lets its job finish the current step, save a
checkpoint and go back to the queue, and exits within its grace period; the next worker
resumes the job from that step and nothing is trained twice or lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import Workers
from tests.faults.conftest import assert_no_overlap, attempts
from tests.faults.test_worker_faults import spec, train_losses, wait_until
from tests.helpers import all_events, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("maintenance")]

GRACE = 30.0
STEPS = 60


@pytest.mark.parametrize("group", [False, True], ids=["main-process", "process-group"])
def test_a_stopped_worker_checkpoints_gives_the_job_back_and_the_next_one_resumes(
    client_module, chat_file: str, worker: Workers, group: bool
) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    for name in list(worker.processes):
        worker.stop(name)
    name = worker.start(FTSVC_WORKER_STOP_GRACE_SECONDS=str(GRACE))
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, STEPS, checkpoint_steps=1000)).json()
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 5, 120, "step 5")

    process = worker.processes.pop(name)
    started = time.monotonic()
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=GRACE + 15)
    took = time.monotonic() - started
    assert took < GRACE, f"the worker took {took:.1f} s to stop"

    stopped = client.get(url).json()
    assert stopped["status"] == "queued", stopped
    [checkpoint] = client.get(f"{url}/checkpoints").json()["data"]
    step = checkpoint["step_number"]
    assert 5 <= step < STEPS and max(train_losses(client, job["id"])) == step  # saved right after its last step
    assert [a["outcome"] for a in attempts(job["id"])] == ["worker_stopped"]
    given_back = [e for e in all_events(client, job["id"]) if "asked to stop" in e["message"]]
    assert given_back and f"resume from checkpoint step {step}" in given_back[0]["message"]

    worker.start()
    done = wait_for(client, job["id"], {"succeeded"}, timeout=300)
    history = attempts(job["id"])
    assert [a["outcome"] for a in history] == ["worker_stopped", "succeeded"]
    assert history[1]["resumed_from_step"] == step and done["attempts"] == 2
    assert_no_overlap(history)
    assert sorted(train_losses(client, job["id"])) == list(range(1, STEPS + 1))
