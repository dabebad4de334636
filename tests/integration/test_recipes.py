"""The training recipe through the API and a real worker: every adapter method, every
format and file type, padding-free batches, and evaluation on held-out data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import (
    EXAMPLES,
    all_events,
    assert_error,
    card_peft_snippet,
    extract_adapter,
    jsonl,
    run_snippet,
    upload_ok,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


def job_body(training_file: str, **qlora: Any) -> dict[str, Any]:
    training = {"learning_rate": 0.02, "max_steps": 12, "warmup_ratio": 0.0} | qlora.pop("training", {})
    return {
        "model": "tiny-llama",
        "training_file": training_file,
        "seed": 5,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        "qlora": {"training": training, **qlora},
    }


def create(client, body: dict[str, Any]) -> str:  # type: ignore[no-untyped-def]
    created = client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]
    return job_id


def train(client, training_file: str, **qlora: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return wait_for(client, create(client, job_body(training_file, **qlora)), {"succeeded"})


def train_losses(client, job_id: str) -> list[float]:  # type: ignore[no-untyped-def]
    return list(train_losses_by_step(client, job_id).values())


def train_losses_by_step(client, job_id: str) -> dict[int, float]:  # type: ignore[no-untyped-def]
    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    return {m["step"]: m["loss"] for m in metrics if m["split"] == "train"}


ADAPTERS = [
    ({"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}, "LORA"),
    ({"type": "lora", "r": 4, "use_dora": True}, "LORA"),
    ({"type": "lora", "r": 4, "use_rslora": True}, "LORA"),
    ({"type": "adalora", "init_r": 6, "target_r": 2}, "ADALORA"),
    ({"type": "ia3"}, "IA3"),
    ({"type": "loha", "r": 4}, "LOHA"),
    ({"type": "lokr", "r": 4}, "LOKR"),
    ({"type": "prompt_tuning", "num_virtual_tokens": 4, "init_text": "Answer briefly."}, "PROMPT_TUNING"),
    ({"type": "prefix_tuning", "num_virtual_tokens": 4}, "PREFIX_TUNING"),
    ({"type": "p_tuning", "num_virtual_tokens": 4, "encoder_hidden_size": 32}, "P_TUNING"),
]


@pytest.mark.parametrize(("adapter", "peft_type"), ADAPTERS, ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_every_adapter_method_trains_saves_reloads_and_changes_the_output(  # type: ignore[no-untyped-def]
    client_module, chat_file, tiny_model: Path, tmp_path: Path, adapter, peft_type
) -> None:
    job = train(client_module, chat_file, adapter=adapter, training={"learning_rate": 0.1})
    archive = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter").content
    adapter_dir = extract_adapter(archive, tmp_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == peft_type
    # No file names the base model by where the worker keeps it (prompt tuning from a
    # text also names its tokenizer): the service's name of the model instead.
    assert config["base_model_name_or_path"] == "tiny-llama"
    assert not [p.name for p in adapter_dir.iterdir() if str(tiny_model.parent).encode() in p.read_bytes()]
    assert config.get("use_dora", False) == adapter.get("use_dora", False)
    assert config.get("use_rslora", False) == adapter.get("use_rslora", False)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(input_ids=ids).logits[:, -1]
        tuned = PeftModel.from_pretrained(base, adapter_dir)
        after = tuned(input_ids=ids).logits[:, -1]
    assert (after - before).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["prompt_completion.csv", "instruction.json", "qa_persian.jsonl", "text.parquet"])
def test_every_format_and_file_type_trains(client_module, name: str) -> None:  # type: ignore[no-untyped-def]
    file_id = upload_ok(client_module, (EXAMPLES / name).read_bytes(), name)
    job = train(client_module, file_id, training={"max_steps": 20})
    losses = train_losses(client_module, job["id"])
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert job["statistics"]["trainable_tokens"] > 0


def test_padding_free_and_padded_batches_train_the_same(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    adapter = {"type": "lora", "dropout": 0.0}
    packed = train(client_module, chat_file, adapter=adapter, data={"packing": True})
    padded = train(client_module, chat_file, adapter=adapter, data={"packing": False})
    packed_losses, padded_losses = train_losses(client_module, packed["id"]), train_losses(client_module, padded["id"])
    assert len(packed_losses) == len(padded_losses) == 12
    # Step 1 is the same computation on the same weights: equal up to float summation order.
    assert abs(packed_losses[0] - padded_losses[0]) <= 1e-5 * padded_losses[0]
    # After that, rounding differences are amplified by updates at lr 0.02: comparable, not equal.
    for a, b in zip(packed_losses, padded_losses, strict=True):
        assert abs(a - b) <= 1e-2 * b, (packed_losses, padded_losses)
    assert packed["trained_tokens"] == padded["trained_tokens"]  # real tokens only, no padding counted
    messages = [e["message"] for e in all_events(client_module, packed["id"])]
    assert any("padding-free batches" in m for m in messages)


def test_validation_split_and_periodic_evaluation(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    job = train(client_module, chat_file, data={"validation_split": 0.2}, training={"eval_steps": 5})
    metrics = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    valid = [m for m in metrics if m["split"] == "valid"]
    assert [m["step"] for m in valid] == [5, 10, 12]  # every 5 steps and at the end
    assert all(m["loss"] > 0 and 0 <= m["mean_token_accuracy"] <= 1 for m in valid)
    train_metrics = [m for m in metrics if m["split"] == "train"]
    assert all(m["mean_token_accuracy"] is not None for m in train_metrics)
    messages = [e["message"] for e in all_events(client_module, job["id"])]
    assert any("29 training examples and 7 validation examples" in m for m in messages)
    csv_rows = client_module.get(f"/v1/files/{job['result_files'][0]}/content").text.splitlines()
    assert csv_rows[0] == "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy"
    step5 = next(r for r in csv_rows[1:] if r.startswith("5,")).split(",")
    assert all(step5), step5  # train and valid columns both filled at an evaluation step


def test_token_budget_rows_and_recomputation_do_not_change_the_losses(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    """The GPU's fast path on the CPU: packed rows of a token budget, with gradient
    checkpointing and peft's LoRA, and without checkpointing with the fused LoRA layer,
    give the same losses step by step."""
    adapter = {"type": "lora", "dropout": 0.0}
    runs = [
        train(
            client_module,
            chat_file,
            adapter=adapter,
            training={"max_seq_length": 256},
            performance={"tokens_per_step": 512, "gradient_checkpointing": checkpointing, "fused_lora": fast},
        )
        for checkpointing, fast in ((True, False), (False, True))
    ]
    losses = [train_losses(client_module, job["id"]) for job in runs]
    assert len(losses[0]) == len(losses[1]) == 12
    assert abs(losses[0][0] - losses[1][0]) <= 1e-5 * losses[1][0]
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) <= 1e-2 * b, losses
    assert runs[0]["runtime"]["speed"]["tokens_per_step"] == 512
    assert [job["runtime"]["speed"]["gradient_checkpointing"] for job in runs] == [True, False]
    assert [job["runtime"]["speed"]["fused_lora"] for job in runs] == [False, True]
    messages = [e["message"] for e in all_events(client_module, runs[0]["id"])]
    assert any("packed rows of 512 tokens" in m for m in messages)
    assert any("fused LoRA" in e["message"] for e in all_events(client_module, runs[1]["id"]))


MULTITASK = {"type": "multitask_prompt_tuning", "num_virtual_tokens": 4, "init_text": "Answer briefly."}
TASK_COUNTS = {"arithmetic": 12, "spelling": 12}


def test_multitask_prompt_tuning_trains_a_prompt_per_task_that_reloads_with_task_ids(  # type: ignore[no-untyped-def]
    client_module, tiny_model: Path, tmp_path: Path
) -> None:
    file_id = upload_ok(client_module, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    job = train(
        client_module,
        file_id,
        adapter=MULTITASK,
        training={"learning_rate": 0.1, "eval_steps": 6},
        data={"validation_split": 0.25},  # the held-out examples evaluate with their task ids too
    )
    assert job["qlora"]["data"]["tasks"] == ["arithmetic", "spelling"]
    assert job["statistics"]["tasks"] == TASK_COUNTS
    metrics = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    assert [m["step"] for m in metrics if m["split"] == "valid"] == [6, 12]
    archive = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter").content
    adapter = extract_adapter(archive, tmp_path)
    tasks = json.loads((adapter / "tasks.json").read_text())
    assert tasks == {"arithmetic": 0, "spelling": 1}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["num_tasks"], config["num_virtual_tokens"]) == ("MULTITASK_PROMPT_TUNING", 2, 4)
    # Each task's matrices start at N(0, 0.02): trained, they are far from it.
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights["prefix_task_cols"].shape == (2, 4, 1) and weights["prefix_task_cols"].abs().max() > 0.2

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 50, 60, 70, 80, 90]] * 2)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        before = base(input_ids=ids).logits[:, -1]
        tuned = PeftModel.from_pretrained(base, adapter)
        by_task = tuned(input_ids=ids, task_ids=torch.tensor([tasks["arithmetic"], tasks["spelling"]])).logits[:, -1]
        generated = tuned.generate(input_ids=ids[:1], task_ids=torch.tensor([tasks["spelling"]]), max_new_tokens=3)
        with pytest.raises(ValueError, match="task_ids"):
            tuned(input_ids=ids)  # a multitask adapter is always told the task
    assert (by_task - before).abs().max() > 1e-4
    assert (by_task[0] - by_task[1]).abs().max() > 1e-4  # each task its own prompt
    assert generated.shape == (1, 9)
    # The model card's code gives the task's id too, and runs as written.
    ran = run_snippet(card_peft_snippet(adapter, tiny_model), tmp_path)
    assert ran.returncode == 0, ran.stderr


def test_a_multitask_job_resumes_exactly_and_another_continues_its_checkpoint(  # type: ignore[no-untyped-def]
    client_module, tmp_path: Path
) -> None:
    client = client_module
    file_id = upload_ok(client, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    body = job_body(file_id, adapter=MULTITASK, training={"learning_rate": 0.1, "max_steps": 24})
    straight = wait_for(client, create(client, body), {"succeeded"})

    job_id = create(client, body)
    url = f"/v1/fine_tuning/jobs/{job_id}"
    while max(train_losses_by_step(client, job_id), default=0) < 4:
        assert client.get(url).json()["status"] in ("validating_files", "queued", "running")
        time.sleep(0.1)
    client.post(f"{url}/pause")
    wait_for(client, job_id, {"paused"}, timeout=60)
    [checkpoint] = client.get(f"{url}/checkpoints").json()["data"]
    archive = client.get(f"{url}/checkpoints/{checkpoint['id']}/adapter").content
    saved = extract_adapter(archive, tmp_path / "checkpoint")
    assert json.loads((saved / "tasks.json").read_text()) == {"arithmetic": 0, "spelling": 1}
    client.post(f"{url}/resume")
    resumed = wait_for(client, job_id, {"succeeded"})
    assert resumed["attempts"] == 2
    # The resumed run's losses are the straight run's (the adapter, optimizer and data position restored).
    expected, got = train_losses_by_step(client, straight["id"]), train_losses_by_step(client, job_id)
    assert sorted(got) == sorted(expected) == list(range(1, 25))
    assert got == pytest.approx(expected, rel=1e-5)

    # A new job on one task's examples continues the checkpoint's prompts, with its tasks and ids.
    arithmetic = [json.loads(line) for line in (EXAMPLES / "multitask.jsonl").read_text().splitlines()]
    arithmetic_file = upload_ok(client, jsonl(*[row for row in arithmetic if row["task"] == "arithmetic"]))
    continued_body = job_body(arithmetic_file, training={"max_steps": 2}) | {"from_checkpoint": checkpoint["id"]}
    continued = wait_for(client, create(client, continued_body), {"succeeded"})
    assert continued["qlora"]["adapter"]["type"] == "multitask_prompt_tuning"
    assert continued["qlora"]["data"]["tasks"] == ["arithmetic", "spelling"]
    # It started from the checkpoint's weights: the spelling prompt, which no example of it
    # trained, is the checkpoint's exactly; the arithmetic one trained on.
    final = extract_adapter(client.get(f"/v1/fine_tuning/jobs/{continued['id']}/artifacts/adapter").content, tmp_path)
    before, after = (load_file(folder / "adapter_model.safetensors") for folder in (saved, final))
    for matrix in ("prefix_task_cols", "prefix_task_rows"):
        assert torch.equal(after[matrix][1], before[matrix][1])
        assert not torch.equal(after[matrix][0], before[matrix][0])
    poetry = upload_ok(client, jsonl(arithmetic[0] | {"task": "poetry"}))
    refused = client.post("/v1/fine_tuning/jobs", json=job_body(poetry) | {"from_checkpoint": checkpoint["id"]})
    assert "'poetry'" in assert_error(refused, 400, "training_file", "unknown_task")["message"]
