"""Tracking, on real training runs of the tiny model: every job's TensorBoard and MLflow
result files hold its curve as /metrics answers it, its stored bytes are what the usage
counts and are gone once it is deleted; a job that asks for Weights & Biases on a worker
that cannot report to it trains anyway and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, TEST_ORG, Workers, make_client
from tests.helpers import (
    EXAMPLES,
    all_events,
    assert_mlflow_matches,
    assert_tensorboard_matches,
    free_port,
    fresh_org,
    stored_keys,
    stored_size,
    unsent_queued_job,
    upload_ok,
    usage,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def client(preflight_worker: Workers) -> Iterator[TestClient]:
    """A client of a new organization: its usage is this module's alone."""
    with make_client(fresh_org("tracking")[1]) as client:
        yield client


def test_a_trained_job_publishes_its_curve_for_tensorboard_and_mlflow_and_deleting_it_frees_its_bytes(
    client: TestClient, worker: Workers
) -> None:
    content = (EXAMPLES / "chat.jsonl").read_bytes()
    training = upload_ok(client, content, "chat.jsonl")
    training_spec = {"learning_rate": 0.01, "max_steps": 6, "checkpoint_steps": 2, "eval_steps": 3}
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": training,
            "seed": 3,
            "qlora": {"training": training_spec, "data": {"validation_split": 0.25}},
        },
    )
    assert created.status_code == 200, created.text
    job = wait_for(client, created.json()["id"], {"succeeded"})
    job_id = job["id"]

    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert {m["split"] for m in metrics} == {"train", "valid"}
    results = {client.get(f"/v1/files/{i}").json()["filename"]: i for i in job["result_files"]}
    assert list(results) == ["step_metrics.csv", "tensorboard.tar.gz", "mlflow_metrics.csv"]
    assert_tensorboard_matches(client.get(f"/v1/files/{results['tensorboard.tar.gz']}/content").content, metrics)
    assert_mlflow_matches(client.get(f"/v1/files/{results['mlflow_metrics.csv']}/content").text, metrics)

    # The usage counts the bytes really stored, by kind.
    checkpoints = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["step_number"] for c in checkpoints] == [6, 4, 2]  # the final one is the adapter artifact's object
    checkpoint_keys, adapter_keys = stored_keys(f"checkpoints/{job_id}"), stored_keys(f"artifacts/{job_id}")
    by_kind = usage(client)["storage"]["by_kind"]
    assert by_kind["checkpoints"] == sum(map(stored_size, checkpoint_keys)) and len(checkpoint_keys) == 4
    assert by_kind["adapters"] == sum(map(stored_size, adapter_keys)) and len(adapter_keys) == 1
    assert by_kind["result_files"] == sum(stored_size(f"files/{i}") for i in results.values())
    assert by_kind["uploads"] == len(content)

    older = checkpoints[2]["id"]
    assert client.delete(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{older}").status_code == 200
    assert len(stored_keys(f"checkpoints/{job_id}")) == 2
    assert usage(client)["storage"]["by_kind"]["checkpoints"] == sum(
        map(stored_size, stored_keys(f"checkpoints/{job_id}"))
    )

    assert client.delete(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200
    gone = checkpoint_keys | adapter_keys | {f"files/{i}" for i in results.values()}
    assert not gone & stored_keys()
    assert usage(client)["storage"]["by_kind"] == {
        "uploads": len(content),
        "result_files": 0,
        "checkpoints": 0,
        "adapters": 0,
        "merged_models": 0,
    }
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize(
    ("worker_env", "reason"),
    [
        ({}, "No API key configured"),
        # A key, and a W&B server that refuses connections (a closed port on this machine).
        ({"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:{port}"}, "connection refused"),
    ],
    ids=["no-key", "unreachable"],
)
def test_a_job_whose_worker_cannot_reach_wandb_trains_and_says_why(
    client_module, chat_file: str, tmp_path: Path, worker_env: dict[str, str], reason: str
) -> None:  # type: ignore[no-untyped-def]
    wandb = {"project": "ftsvc-tests", "tags": ["ci"]}
    job_id = unsent_queued_job(
        TEST_ORG,
        chat_file,
        integrations=[{"type": "wandb", "wandb": wandb}],
        qlora={"training": {"max_steps": 2}},
    )
    # The job's own process, as the Celery worker starts it, with W&B's settings only as given.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {k: v.format(port=free_port()) for k, v in worker_env.items()}
    env |= {"WANDB_INIT_TIMEOUT": "10", "WANDB_CONFIG_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "worker.job_process", job_id], cwd=ROOT, env=env, capture_output=True, timeout=300
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]

    job = client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job["error"]
    assert job["integrations"] == [{"type": "wandb", "wandb": {"name": None, "entity": None, **wandb}}]
    events = all_events(client_module, job_id)
    warnings = [e for e in events if "Weights & Biases" in e["message"]]
    assert len(warnings) == 1 and warnings[0]["level"] == "warn", warnings
    message = warnings[0]["message"]
    assert message.startswith("Not reporting to Weights & Biases: ") and reason in message, message
    assert message.endswith("The job trains without it (the worker reads its W&B key from WANDB_API_KEY)")
    started = next(i for i, e in enumerate(events) if e["message"].startswith("Training started"))
    assert events.index(warnings[0]) < started  # said before training, not after
