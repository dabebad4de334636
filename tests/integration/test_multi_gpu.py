"""Jobs on several GPUs (qlora.resources.gpus), run for real through the Celery worker:
two ranks in two processes training the tiny 4-bit Llama with DDP over gloo on the CPU
(the tests' FTSVC_CPU_RANKS), as NCCL ranks do on GPUs."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Checkpoint
from core.storage import get_storage
from tests.conftest import Workers
from tests.faults.conftest import attempts
from tests.faults.test_worker_faults import LOSS_TOLERANCE, train_losses, wait_until
from tests.helpers import all_events, wait_for

pytestmark = pytest.mark.slow

# This CPU machine's workers here describe two GPUs (FTSVC_WORKER_DEVICES), so that
# routing sends them two-GPU jobs (core.routing refuses those where no live worker has
# two); their ranks then train on the CPU (the tests' FTSVC_CPU_RANKS).
TWO_GPUS = {"FTSVC_WORKER_DEVICES": json.dumps([{"name": "Fake GPU", "memory_gib": 22}] * 2)}


@pytest.fixture(scope="module")
def worker(tiny_model: Path) -> Iterator[Workers]:
    """This module's training worker, with its two described GPUs."""
    workers = Workers()
    workers.start(**TWO_GPUS)
    yield workers
    for name in list(workers.processes):
        workers.stop(name)


def spec(training_file: str, gpus: int, **training: Any) -> dict[str, Any]:
    """One epoch, or `max_steps` (in `training`)."""
    hyperparameters = {"batch_size": 2} | ({} if "max_steps" in training else {"n_epochs": 1})
    return {
        "model": "tiny-llama",
        "training_file": training_file,
        "seed": 5,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        # Two micro-batches a step: on one process accumulated, on two one each.
        "qlora": {"training": {"gradient_accumulation_steps": 2, **training}, "resources": {"gpus": gpus}},
    }


def rank_pids(client, job_id: str) -> list[int]:  # type: ignore[no-untyped-def]
    """The ranks' processes, from rank 0's event that names them (waits for it)."""

    def named() -> list[int] | None:
        for event in all_events(client, job_id):
            if event["message"].startswith("Training on 2 CPU processes"):
                return [rank["pid"] for rank in event["data"]["ranks"]]
        return None

    return wait_until(named, 300, "the ranks' event")  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: list[int]) -> None:
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, "the ranks to exit")


def test_two_ranks_train_one_epoch_as_one_process_does(client_module, chat_file: str, worker) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    one = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 1)).json()
    two = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2)).json()
    assert two["qlora"]["resources"] == {"gpus": 2} and one["qlora"]["resources"] == {"gpus": 1}
    one, two = wait_for(client, one["id"], {"succeeded"}), wait_for(client, two["id"], {"succeeded"})

    pids = rank_pids(client, two["id"])
    assert len(set(pids)) == 2
    wait_gone(pids)
    assert two["runtime"]["world_size"] == 2 and one["runtime"]["world_size"] == 1
    # Each rank trained on its half of every step's batch: the same steps over the epoch,
    # and the tokens in the loss, summed over both ranks, are the whole epoch's.
    assert sorted(train_losses(client, two["id"])) == sorted(train_losses(client, one["id"]))
    assert two["trained_tokens"] == one["trained_tokens"] > 0
    assert client.get(f"/v1/fine_tuning/jobs/{two['id']}/artifacts/adapter").status_code == 200


def test_a_paused_two_rank_job_resumes_exactly(client_module, chat_file: str, worker) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    body = spec(chat_file, 2, max_steps=14, checkpoint_steps=1000, learning_rate=0.01)
    straight = client.post("/v1/fine_tuning/jobs", json=body).json()
    straight = wait_for(client, straight["id"], {"succeeded"})

    job = client.post("/v1/fine_tuning/jobs", json=body).json()
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    pids = rank_pids(client, job["id"])
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 3, 300, "step 3")
    client.post(f"{url}/pause")
    wait_for(client, job["id"], {"paused"}, timeout=60)
    wait_gone(pids)  # both ranks stopped with rank 0
    [checkpoint] = client.get(f"{url}/checkpoints").json()["data"]
    with session_scope() as session:
        state_key = session.scalars(select(Checkpoint.state_key).where(Checkpoint.id == checkpoint["id"])).one()
    with get_storage().open(state_key) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        names = {name.rsplit("/", 1)[-1] for name in tar.getnames()}
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "trainer_state.json"} <= names

    client.post(f"{url}/resume")
    done = wait_for(client, job["id"], {"succeeded"})
    assert attempts(job["id"])[1]["resumed_from_step"] == checkpoint["step_number"]
    # Every rank resumed from its own RNG state and data position: the straight run's losses.
    expected, got = train_losses(client, straight["id"]), train_losses(client, job["id"])
    assert sorted(got) == sorted(expected) == list(range(1, 15))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=LOSS_TOLERANCE), f"step {step}: {got[step]} != {loss}"
    assert done["trained_tokens"] == straight["trained_tokens"]


def test_a_killed_rank_fails_the_job_and_stops_the_others(client_module, chat_file: str, worker) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2, max_steps=500)).json()
    rank0, rank1 = rank_pids(client, job["id"])
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 2, 300, "step 2")
    os.kill(rank1, signal.SIGKILL)

    failed = wait_for(client, job["id"], {"failed"}, timeout=60)
    assert failed["error"]["code"] == "rank_failed"
    message = failed["error"]["message"]
    assert "rank 1 of 2" in message and "SIGKILL" in message and "other ranks were stopped" in message, message
    assert message.startswith("Training failed at step")
    wait_gone([rank0])
    assert attempts(job["id"])[0]["outcome"] == "failed"


def test_cancelling_a_two_rank_job_stops_every_rank(client_module, chat_file: str, worker) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2, max_steps=500)).json()
    pids = rank_pids(client, job["id"])
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 1, 300, "step 1")
    started = time.monotonic()
    assert client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    wait_gone(pids)
    assert time.monotonic() - started < 30
    assert attempts(job["id"])[0]["outcome"] == "cancelled"


def test_a_stopped_worker_checkpoints_a_two_rank_job_and_gives_it_back(client_module, chat_file: str, worker) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    for name in list(worker.processes):
        worker.stop(name)
    name = worker.start(FTSVC_WORKER_STOP_GRACE_SECONDS="90", **TWO_GPUS)
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2, max_steps=16, checkpoint_steps=1000)).json()
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    pids = rank_pids(client, job["id"])
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 2, 300, "step 2")

    process = worker.processes.pop(name)
    process.send_signal(signal.SIGTERM)  # the worker forwards it to the job process, which forwards it to the ranks
    process.wait(timeout=120)
    wait_gone(pids)
    assert client.get(url).json()["status"] == "queued"
    [checkpoint] = client.get(f"{url}/checkpoints").json()["data"]
    assert max(train_losses(client, job["id"])) == checkpoint["step_number"] < 16  # saved after its last step
    assert [a["outcome"] for a in attempts(job["id"])] == ["worker_stopped"]

    worker.start(**TWO_GPUS)
    done = wait_for(client, job["id"], {"succeeded"}, timeout=300)
    assert done["attempts"] == 2 and attempts(job["id"])[1]["resumed_from_step"] == checkpoint["step_number"]
    assert sorted(train_losses(client, job["id"])) == list(range(1, 17))
