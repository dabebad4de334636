"""What a job reports is what training did: epochs, steps and trained tokens match the
metrics a real worker logged; a running job shows its progress and estimated finish;
its log says where it runs, what it loads and how long that took, and names
validations as such. (Its name sorts it after the modules that expect no training
worker: the session's worker runs from the first module that uses it on.)"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import EXAMPLES, TERMINAL, all_events, upload_ok, wait_for

pytestmark = pytest.mark.slow


def submit(client: TestClient, training_file: str, hyperparameters: dict[str, Any], **qlora: Any) -> str:
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": training_file,
            "seed": 1,
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
            "qlora": qlora,
        },
    )
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]
    return job_id


def metrics(client: TestClient, job_id: str, split: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics", params={"split": split})
    points: list[dict[str, Any]] = response.json()["data"]
    assert {p["split"] for p in points} <= {split}
    return points


def test_epochs_steps_and_trained_tokens_are_what_training_did(client: TestClient, worker) -> None:  # type: ignore[no-untyped-def]
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    job_id = submit(client, training, {"n_epochs": 2, "batch_size": 8}, training={"learning_rate": 0.01})
    job = wait_for(client, job_id, {"succeeded"})

    train = metrics(client, job_id, "train")
    # 36 examples in batches of 8: 5 steps per epoch, 10 in all, each logged.
    assert job["hyperparameters"]["n_epochs"] == 2 and train[-1]["epoch"] == 2.0
    assert job["progress"]["total_steps"] == job["progress"]["step"] == len(train) == train[-1]["step"] == 10
    assert job["progress"]["epochs"] == 2 and job["progress"]["seconds_per_step"] > 0
    # Trained tokens are the tokens in the loss: every example's trained tokens, once per epoch.
    assert job["trained_tokens"] == 2 * job["statistics"]["trainable_tokens"] == train[-1]["trained_tokens"]
    assert train[-1]["tokens_seen"] > job["trained_tokens"]  # prompts are read, not trained on
    assert [p["trained_tokens"] for p in train] == sorted(p["trained_tokens"] for p in train)
    assert job["estimated_finish"] is None and job["queue_position"] is None  # it is over

    events = all_events(client, job_id)
    messages = [e["message"] for e in events]
    in_order = [
        "Job process ",
        "Running on ",
        "Loading tiny-llama in 4 bits on cpu",
        "Loaded tiny-llama in 4 bits on cpu in ",
        "Training started: 10 steps, 2 epochs of 5 steps (5 batches)",
        "First training step done ",
        "Step 10: ",
        "Job succeeded",
    ]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(prefix)) for prefix in in_order]
    assert positions == sorted(positions), messages
    # Start-up times: the base loaded (from this worker's pre-quantized copy, or quantized
    # and then stored for the next job), then the first step, counted from the process's start.
    loaded, first_step = events[positions[3]], events[positions[5]]
    assert loaded["data"]["base_cache"] in ("stored", "hit"), loaded
    assert ("pre-quantized copy" in loaded["message"]) and loaded["data"]["process_seconds"] >= loaded["data"][
        "load_seconds"
    ]
    assert first_step["data"]["step"] == 1
    assert first_step["data"]["process_seconds"] >= loaded["data"]["process_seconds"]
    assert len([m for m in messages if m.startswith("First training step done")]) == 1


def test_max_steps_progress_estimated_finish_and_validations(client: TestClient, worker) -> None:  # type: ignore[no-untyped-def]
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    job_id = submit(
        client,
        training,
        {"batch_size": 8},
        training={"learning_rate": 0.01, "max_steps": 40, "eval_steps": 10},
        data={"validation_split": 0.2},
    )
    # 36 examples less 7 held out: 29 in batches of 8, 4 steps per epoch; 40 steps start 10 epochs.
    deadline = time.monotonic() + 240
    while True:
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] == "queued":
            assert job["hyperparameters"]["n_epochs"] == 10 and job["queue_position"] >= 1
        if job["status"] == "running" and job["estimated_finish"] is not None:
            break
        assert job["status"] not in TERMINAL and time.monotonic() < deadline, job["status"]
        time.sleep(0.05)
    seen_at = time.time()
    assert job["progress"]["total_steps"] == 40 and 1 <= job["progress"]["step"] <= 40
    assert seen_at - 5 <= job["estimated_finish"] <= seen_at + 600

    job = wait_for(client, job_id, {"succeeded"})
    train, valid = metrics(client, job_id, "train"), metrics(client, job_id, "valid")
    assert job["hyperparameters"]["n_epochs"] == job["progress"]["epochs"] == 10
    assert len(train) == job["progress"]["total_steps"] == 40 and 9 < train[-1]["epoch"] <= 10
    assert job["trained_tokens"] == train[-1]["trained_tokens"]
    assert [p["step"] for p in valid] == [10, 20, 30, 40]
    messages = [e["message"] for e in all_events(client, job_id)]
    assert any(m.startswith("Training started: 40 steps, 10 epochs of 4 steps") for m in messages)
    validations = [m for m in messages if m.startswith("Validation at step ")]
    assert [m.split(":")[0] for m in validations] == [f"Validation at step {s}" for s in (10, 20, 30, 40)]
