"""The training recipe through the API and a real worker: every adapter method, every
format and file type, padding-free batches, and evaluation on held-out data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import EXAMPLES, all_events, extract_adapter, upload_ok, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


def train(client, training_file: str, **qlora: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    training = {"learning_rate": 0.02, "max_steps": 12, "warmup_ratio": 0.0} | qlora.pop("training", {})
    body = {
        "model": "tiny-llama",
        "training_file": training_file,
        "seed": 5,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        "qlora": {"training": training, **qlora},
    }
    created = client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"})


def train_losses(client, job_id: str) -> list[float]:  # type: ignore[no-untyped-def]
    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    return [m["loss"] for m in metrics if m["split"] == "train"]


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
    """The GPU's fast path on the CPU: packed rows of a token budget, with and without
    gradient checkpointing, give the same losses step by step."""
    adapter = {"type": "lora", "dropout": 0.0}
    runs = [
        train(
            client_module,
            chat_file,
            adapter=adapter,
            training={"max_seq_length": 256},
            performance={"tokens_per_step": 512, "gradient_checkpointing": checkpointing},
        )
        for checkpointing in (True, False)
    ]
    losses = [train_losses(client_module, job["id"]) for job in runs]
    assert len(losses[0]) == len(losses[1]) == 12
    assert abs(losses[0][0] - losses[1][0]) <= 1e-5 * losses[1][0]
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) <= 1e-2 * b, losses
    assert runs[0]["runtime"]["speed"]["tokens_per_step"] == 512
    assert [job["runtime"]["speed"]["gradient_checkpointing"] for job in runs] == [True, False]
    messages = [e["message"] for e in all_events(client_module, runs[0]["id"])]
    assert any("packed rows of 512 tokens" in m for m in messages)
