"""The real path: a Celery worker process trains QLoRA (bitsandbytes 4-bit NF4 + PEFT
LoRA + TRL) on the tiny Llama, and the adapter comes back through the API."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import EXAMPLES, all_events, assert_error, extract_adapter, upload_ok, wait_for

pytestmark = pytest.mark.slow


def test_upload_train_download_and_load_with_peft(client, worker, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    validation = upload_ok(client, (EXAMPLES / "chat_validation.jsonl").read_bytes(), "chat_validation.jsonl")
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": training,
            "validation_file": validation,
            "seed": 1,
            "suffix": "e2e",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
            "qlora": {"adapter": {"r": 8, "alpha": 16}, "training": {"learning_rate": 0.01}},
        },
    )
    assert created.status_code == 200, created.text
    job = wait_for(client, created.json()["id"], {"succeeded"})

    assert job["fine_tuned_model"] == f"ft:tiny-llama:org-test:e2e:{job['id']}"
    assert job["trained_tokens"] > 0 and job["finished_at"] >= job["created_at"]
    assert job["runtime"]["device"] == "cpu" and job["runtime"]["bitsandbytes"] == "0.50.2"

    metrics = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    train = [m for m in metrics if m["split"] == "train"]
    assert len(train) == 18  # 36 examples / batch 4 * 2 epochs, logged every step
    first, last = sum(m["loss"] for m in train[:3]) / 3, sum(m["loss"] for m in train[-3:]) / 3
    assert last < first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert all(m["tokens_per_second"] > 0 for m in train)
    assert [m["epoch"] for m in metrics if m["split"] == "valid"] == [1.0, 2.0]

    messages = [e["message"] for e in all_events(client, job["id"])]
    assert messages[0].startswith("Created fine-tuning job") and messages[-1].startswith("Job succeeded")
    assert any(m.startswith("Step 18:") for m in messages)

    results = client.get(f"/v1/files/{job['result_files'][0]}/content").text.splitlines()
    assert results[0].startswith("step,train_loss") and len(results) == 19

    download = client.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter")
    assert download.status_code == 200
    assert download.headers["x-artifact-sha256"] == hashlib.sha256(download.content).hexdigest()
    adapter = extract_adapter(download.content, tmp_path)
    assert adapter.name == f"ft-tiny-llama-org-test-e2e-{job['id']}"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (8, 16, "LORA")

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned = PeftModel.from_pretrained(base, adapter)
        tuned_logits = tuned(ids).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-3


def test_cancelling_a_running_job_stops_it_within_a_few_steps(client, worker) -> None:  # type: ignore[no-untyped-def]
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": training,
            "qlora": {"training": {"max_steps": 5000}},
        },
    ).json()
    wait_for(client, created["id"], {"running"})
    deadline = time.monotonic() + 120
    while not client.get(f"/v1/fine_tuning/jobs/{created['id']}/metrics").json()["data"]:
        assert time.monotonic() < deadline, "no training step was logged"
        time.sleep(0.2)
    cancelled = client.post(f"/v1/fine_tuning/jobs/{created['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    step_at_cancel = len(client.get(f"/v1/fine_tuning/jobs/{created['id']}/metrics").json()["data"])

    deadline = time.monotonic() + 60
    while True:
        stopped = [e for e in all_events(client, created["id"]) if e["message"].startswith("Training stopped")]
        if stopped:
            break
        assert time.monotonic() < deadline, "the worker did not stop after the cancel"
        time.sleep(0.2)
    stop_step = int(stopped[0]["message"].split("step ")[1].split()[0])
    assert step_at_cancel <= stop_step <= step_at_cancel + 3
    job = client.get(f"/v1/fine_tuning/jobs/{created['id']}").json()
    assert job["status"] == "cancelled" and job["fine_tuned_model"] is None
    assert_error(client.get(f"/v1/fine_tuning/jobs/{created['id']}/artifacts/adapter"), 404)


def test_a_model_that_cannot_load_fails_the_job_with_a_clear_error(client, worker, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    broken = tiny_model.parent / "broken-llama"
    broken.mkdir(exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model / name, broken / name)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")  # weights that cannot load
    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    created = client.post("/v1/fine_tuning/jobs", json={"model": "broken-llama", "training_file": training}).json()
    job = wait_for(client, created["id"], {"failed"})
    assert job["error"]["code"] == "model_load_failed" and job["error"]["param"] == "model"
    assert job["error"]["message"].startswith("Loading failed: ") and "broken-llama" in job["error"]["message"]
    assert job["attempts"] == 1  # final: a model that cannot load is not retried
    failure = all_events(client, created["id"])[-1]
    assert failure["level"] == "error" and failure["data"]["retried"] is False
    assert failure["data"]["code"] == "model_load_failed" and failure["data"]["exception"]
    assert failure["data"]["phase"] == "loading"
