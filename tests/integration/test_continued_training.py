"""Continued training for real on the tiny Llama: a job's fine-tuned model trains further
in a second job, on new data and with new hyperparameters, starting from its adapter;
a checkpoint's name starts a job too; and the final adapter is the job's last checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import EXAMPLES, all_events, upload_ok, wait_for

pytestmark = pytest.mark.slow

JOBS = "/v1/fine_tuning/jobs"
# A run that starts from a trained adapter begins at that adapter's loss: its first
# training loss (one batch of all 6 examples) is within this of the adapter's validation
# loss on the same 6 examples (training applies LoRA dropout: measured 0.003 apart at
# most), which tells the checkpoint at step 6 from the final adapter (0.06 apart) ...
SAME_START = 0.02
# ... and below a run from scratch on them (measured: 0.6 below after 12 steps).
TRAINED_GAIN = 0.3


def run(client: TestClient, **body: Any) -> dict[str, Any]:
    created = client.post(JOBS, json={"model": "tiny-llama", "seed": 3} | body)
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"})


def batch(size: int) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": size}}}


def losses(client: TestClient, job_id: str, split: str = "train") -> dict[int, float]:
    points = client.get(f"{JOBS}/{job_id}/metrics", params={"split": split}).json()["data"]
    return {p["step"]: p["loss"] for p in points}


def test_a_fine_tuned_model_trains_further_from_its_adapter(client, worker) -> None:  # type: ignore[no-untyped-def]
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    new_data = upload_ok(client, (EXAMPLES / "chat_validation.jsonl").read_bytes(), "chat_validation.jsonl")
    first = run(
        client,
        training_file=training,
        validation_file=new_data,
        suffix="first",
        method=batch(4),
        qlora={"training": {"learning_rate": 0.01, "max_steps": 12, "checkpoint_steps": 6, "eval_steps": 6}},
    )
    model = first["fine_tuned_model"]

    # The final adapter is listed as the last checkpoint, with the last step's metrics.
    listed = client.get(f"{JOBS}/{first['id']}/checkpoints").json()["data"]
    assert [c["step_number"] for c in listed] == [12, 6]
    final, middle = listed
    assert final["fine_tuned_model_checkpoint"] == f"{model}:ckpt-step-12"
    assert final["metrics"]["train_loss"] == pytest.approx(losses(client, first["id"])[12])
    assert final["metrics"]["valid_loss"] == pytest.approx(losses(client, first["id"], "valid")[12])
    artifact = client.get(f"{JOBS}/{first['id']}/artifacts/adapter")
    assert final["adapter_sha256"] == artifact.headers["x-artifact-sha256"]

    # The fine-tuned model as the model: new data (what the first job validated on), new
    # hyperparameters, the same adapter trained further on the same base.
    scratch = run(client, training_file=new_data, method=batch(6), qlora={"training": {"max_steps": 1}})
    second = run(
        client,
        model=model,
        training_file=new_data,
        method=batch(6),
        qlora={"training": {"learning_rate": 0.005, "max_steps": 3}},
    )
    assert second["model"] == model and second["fine_tuned_model"] == f"ft:tiny-llama:org-test:{second['id']}"
    assert second["qlora"]["adapter"] == first["qlora"]["adapter"]
    start = losses(client, second["id"])[1]
    assert start == pytest.approx(final["metrics"]["valid_loss"], abs=SAME_START)
    assert start < losses(client, scratch["id"])[1] - TRAINED_GAIN
    said = [e["message"] for e in all_events(client, second["id"])]
    assert any(m.startswith(f"Continues training {model} on its base model tiny-llama") for m in said)
    assert any(m.startswith("Loading tiny-llama in 4 bits") for m in said)
    assert [c["step_number"] for c in client.get(f"{JOBS}/{second['id']}/checkpoints").json()["data"]] == [3]
    assert model in [m["id"] for m in client.get("/v1/models").json()["data"]]

    # A checkpoint's name as from_checkpoint: the third job starts at step 6's adapter.
    third = run(
        client,
        training_file=new_data,
        from_checkpoint=middle["fine_tuned_model_checkpoint"],
        method=batch(6),
        qlora={"training": {"max_steps": 1}},
    )
    assert third["from_checkpoint"] == middle["fine_tuned_model_checkpoint"]
    start = losses(client, third["id"])[1]
    assert start == pytest.approx(middle["metrics"]["valid_loss"], abs=SAME_START)
    assert start < losses(client, scratch["id"])[1] - TRAINED_GAIN
