"""Faults that happen to long jobs, caused for real: a worker killed with SIGKILL
mid-training, Redis redelivering a long task, Redis losing every message. The job
must not be lost, must not run twice at once, and must continue where it stopped."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

import pytest
import redis

from tests.conftest import BROKER_URL, Workers
from tests.faults.conftest import assert_no_overlap, attempts
from tests.helpers import all_events, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("maintenance")]

# Resumed and straight runs compute the same float operations in the same order on a
# CPU; what differs is only that the resumed one reloads the adapter, optimizer and
# RNG states from the checkpoint (exact copies). Allowed: 1e-5 relative per step.
LOSS_TOLERANCE = 1e-5


def spec(training_file: str, max_steps: int, **training: Any) -> dict[str, Any]:
    return {
        "model": "tiny-llama",
        "training_file": training_file,
        "seed": 11,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        "qlora": {"training": {"max_steps": max_steps, "learning_rate": 0.01, **training}},
    }


def train_losses(client, job_id: str) -> dict[int, float]:  # type: ignore[no-untyped-def]
    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    return {m["step"]: m["loss"] for m in metrics if m["split"] == "train"}


def wait_until(condition, timeout: float, what: str) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_a_killed_worker_is_replaced_and_the_job_resumes_with_the_same_losses(
    client_module, chat_file: str, worker: Workers
) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    body = spec(chat_file, 48, checkpoint_steps=8)
    straight = client.post("/v1/fine_tuning/jobs", json=body).json()
    straight = wait_for(client, straight["id"], {"succeeded"})

    killed = client.post("/v1/fine_tuning/jobs", json=body).json()
    checkpoint_url = f"/v1/fine_tuning/jobs/{killed['id']}/checkpoints"
    wait_until(lambda: client.get(checkpoint_url).json()["data"], 120, "a first checkpoint")
    wait_until(lambda: max(train_losses(client, killed["id"]), default=0) >= 12, 60, "step 12")
    for name in list(worker.processes):
        worker.kill(name)  # SIGKILL to the worker and its pool child, mid-training
    step_at_kill = max(train_losses(client, killed["id"]))
    assert client.get(f"/v1/fine_tuning/jobs/{killed['id']}").json()["status"] == "running"
    worker.start()  # a second worker; the job reaches it once the first one's lease expires

    resumed = wait_for(client, killed["id"], {"succeeded"}, timeout=300)
    assert resumed["attempts"] == 2 and step_at_kill < 48
    history = attempts(killed["id"])
    assert [a["outcome"] for a in history] == ["lease_expired", "succeeded"]
    assert history[1]["resumed_from_step"] is not None
    assert 8 <= history[1]["resumed_from_step"] <= step_at_kill and history[1]["resumed_from_step"] % 8 == 0
    assert_no_overlap(history)
    messages = [e["message"] for e in all_events(client, killed["id"])]
    assert any(
        "expired" in m and f"resume from checkpoint step {history[1]['resumed_from_step']}" in m for m in messages
    )

    # The resumed run's losses are the straight run's, step by step.
    expected, got = train_losses(client, straight["id"]), train_losses(client, killed["id"])
    assert sorted(got) == sorted(expected) == list(range(1, 49))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=LOSS_TOLERANCE), f"step {step}: {got[step]} != {loss}"
    assert straight["trained_tokens"] == resumed["trained_tokens"]

    # Checkpoints: the newest three kept (keep_checkpoints), newest first, downloadable;
    # the last step's is the published adapter, kept besides them (with no trainer state).
    listed = client.get(checkpoint_url).json()
    assert [c["step_number"] for c in listed["data"]] == [48, 40, 32, 24]
    final, newest = listed["data"][:2]
    artifact = client.get(f"/v1/fine_tuning/jobs/{killed['id']}/artifacts/adapter")
    assert final["adapter_sha256"] == artifact.headers["x-artifact-sha256"]
    assert newest["object"] == "fine_tuning.job.checkpoint" and newest["fine_tuning_job_id"] == killed["id"]
    assert newest["metrics"]["train_loss"] == pytest.approx(got[40])
    assert newest["fine_tuned_model_checkpoint"].endswith(f"{killed['id']}:ckpt-step-40")
    download = client.get(f"{checkpoint_url}/{newest['id']}/adapter")
    assert download.status_code == 200 and download.headers["x-artifact-sha256"] == newest["adapter_sha256"]
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = set(tar.getnames())
    folder = f"ft-tiny-llama-org-test-{killed['id']}-ckpt-step-40"
    assert {f"{folder}/adapter_config.json", f"{folder}/adapter_model.safetensors", f"{folder}/README.md"} <= names
    assert not {name.split("/")[-1] for name in names} & {"optimizer.pt", "scheduler.pt", "trainer_state.json"}


def test_a_job_can_start_from_another_jobs_checkpoint(client_module, chat_file: str, worker: Workers) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    source = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 24, checkpoint_steps=10)).json()
    source = wait_for(client, source["id"], {"succeeded"})
    listed = client.get(f"/v1/fine_tuning/jobs/{source['id']}/checkpoints").json()["data"]
    [checkpoint] = [c for c in listed if c["step_number"] == 20]  # not the final one, at 24
    fresh = wait_for(client, client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2)).json()["id"], {"succeeded"})
    body = spec(chat_file, 2) | {"from_checkpoint": checkpoint["id"]}
    body["qlora"]["adapter"] = {"r": 4}  # the adapter comes from the checkpoint: another r is refused
    refused = client.post("/v1/fine_tuning/jobs", json=body).json()["error"]
    assert (refused["param"], refused["code"]) == ("qlora.adapter.r", "adapter_settings_mismatch")
    body["qlora"]["adapter"] = {"r": 16}
    continued = client.post("/v1/fine_tuning/jobs", json=body).json()
    assert continued["from_checkpoint"] == checkpoint["id"] and continued["qlora"]["adapter"]["r"] == 16
    continued = wait_for(client, continued["id"], {"succeeded"})
    # Starting from trained weights: the first loss is the trained one, far below a fresh start.
    first = train_losses(client, continued["id"])[1]
    assert checkpoint["step_number"] == 20
    assert first < train_losses(client, fresh["id"])[1] - 0.3
    assert first == pytest.approx(checkpoint["metrics"]["train_loss"], abs=0.5)


def test_pause_checkpoints_and_frees_the_worker_and_resume_continues(
    client_module, chat_file: str, worker: Workers
) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 40, checkpoint_steps=1000)).json()
    url = f"/v1/fine_tuning/jobs/{job['id']}"
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 5, 120, "step 5")
    asked = client.post(f"{url}/pause").json()
    assert asked["status"] == "running" and asked["pause_requested"] is True
    paused = wait_for(client, job["id"], {"paused"}, timeout=60)
    assert paused["pause_requested"] is False
    [checkpoint] = client.get(f"{url}/checkpoints").json()["data"]
    step = checkpoint["step_number"]
    assert max(train_losses(client, job["id"])) == step  # it stopped right after saving
    assert attempts(job["id"])[0]["outcome"] == "paused"
    assert client.post(f"{url}/pause").status_code == 409

    resumed = client.post(f"{url}/resume").json()
    assert resumed["status"] == "queued"
    done = wait_for(client, job["id"], {"succeeded"})
    assert done["attempts"] == 2 and attempts(job["id"])[1]["resumed_from_step"] == step
    assert sorted(train_losses(client, job["id"])) == list(range(1, 41))
    assert client.post(f"{url}/resume").json()["error"]["code"] == "job_not_paused"
    # Each attempt's process reports its own first step; the second loads the base from
    # the worker's pre-quantized copy that the first one left.
    events = all_events(client, job["id"])
    assert [e["data"]["step"] for e in events if e["message"].startswith("First training step done")] == [1, step + 1]
    assert [e["data"]["base_cache"] for e in events if e["message"].startswith("Loaded tiny-llama")][-1] == "hit"


def test_a_redelivered_long_task_does_not_run_twice(client_module, chat_file: str, worker: Workers) -> None:  # type: ignore[no-untyped-def]
    """While a long job trains on the normal worker, a second worker that makes Redis
    redeliver messages unacknowledged for 2 s joins: the job's message is delivered
    again while it trains. (kombu keeps refreshing the messages a consumer with a short
    timeout holds itself, so the job must be running elsewhere when it joins.)"""
    client = client_module
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 120, checkpoint_steps=1000)).json()
    wait_for(client, job["id"], {"running"})
    impatient = worker.start(FTSVC_BROKER_VISIBILITY_TIMEOUT="2")
    try:
        done = wait_for(client, job["id"], {"succeeded"})
    finally:
        worker.stop(impatient)
    dropped = [e for e in all_events(client, job["id"]) if e["message"].startswith("A second delivery")]
    assert dropped, "the message was not delivered a second time; the test proved nothing"
    assert done["attempts"] == 1 and [a["outcome"] for a in attempts(job["id"])] == ["succeeded"]
    assert sorted(train_losses(client, job["id"])) == list(range(1, 121))


def test_jobs_queued_when_redis_loses_everything_still_run(client_module, chat_file: str, worker: Workers) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    running = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 30)).json()
    waiting = [client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 2)).json() for _ in range(3)]
    wait_for(client, running["id"], {"running"})
    assert all(client.get(f"/v1/fine_tuning/jobs/{j['id']}").json()["status"] == "queued" for j in waiting)
    redis.Redis.from_url(BROKER_URL).flushall()  # every queued message is gone

    for job in [running, *waiting]:
        done = wait_for(client, job["id"], {"succeeded"}, timeout=300)
        assert done["attempts"] == 1, done
