"""The adapter archives as users get them from a real job: one folder named after the
model, the base model named by its public id, and a model card with the job's figures
whose loading code runs as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import EXAMPLES, card_peft_snippet, extract_adapter, front_matter, run_snippet, upload_ok, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]


def train(client, **fields: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    created = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "seed": 2} | fields)
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"})


def test_the_adapter_archive_is_one_folder_whose_card_has_the_jobs_figures_and_loads_as_written(  # type: ignore[no-untyped-def]
    client_module, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_module
    job = train(
        client,
        training_file=upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl"),
        validation_file=upload_ok(client, (EXAMPLES / "chat_validation.jsonl").read_bytes(), "valid.jsonl"),
        suffix="card",
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 4}}},
        qlora={"adapter": {"r": 4}, "training": {"learning_rate": 0.01, "max_steps": 6, "eval_steps": 3}},
    )
    download = client.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter")
    adapter = extract_adapter(download.content, tmp_path)
    assert adapter.name == job["fine_tuned_model"].replace(":", "-")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama"

    card = (adapter / "README.md").read_text()
    meta = front_matter(card)
    assert meta["base_model"] == "tiny-llama" and meta["library_name"] == "peft"
    assert {"base_model:adapter:tiny-llama", "lora", "supervised", "qlora"} <= set(meta["tags"])
    assert f"\n# {job['fine_tuned_model']}\n" in card
    assert "| adapter | `lora`: r=4, alpha=32," in card
    stats = job["statistics"]
    for key in ("examples", "tokens_total", "trainable_tokens", "truncated_examples"):
        assert f"| `{key}` | {stats[key]} |" in card
    assert "| `batch_size` | 4 |" in card and "| `learning_rate` | 0.01 |" in card and "| `max_steps` | 6 |" in card
    metrics = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    train_last = [m for m in metrics if m["split"] == "train"][-1]
    valid_last = [m for m in metrics if m["split"] == "valid"][-1]
    assert "At step 6," in card
    assert f"| loss | {train_last['loss']:.4g} | {valid_last['loss']:.4g} |" in card
    assert "LoRARequest(adapter, 1, adapter)" in card and "convert_lora_to_gguf.py" in card

    # The card's PEFT code, run as written but for the base model's path, where it says to.
    ran = run_snippet(card_peft_snippet(adapter, tiny_model), tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout.split()[-1]) > 0, "nothing was generated"

    # Where the base model's id is a path to it, peft loads base and adapter from the folder alone.
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    (tmp_path / "tiny-llama").symlink_to(tiny_model)
    monkeypatch.chdir(tmp_path)
    ids = torch.tensor([[1, 50, 60, 70]])
    with torch.no_grad():
        auto = AutoPeftModelForCausalLM.from_pretrained(adapter.name)(ids).logits
        explicit = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)(ids).logits
    assert torch.equal(auto, explicit)


def test_a_checkpoints_archive_is_named_after_it_has_its_figures_and_starts_another_job(  # type: ignore[no-untyped-def]
    client_module, chat_file: str, tmp_path: Path
) -> None:
    client = client_module
    job = train(client, training_file=chat_file, qlora={"training": {"max_steps": 4, "checkpoint_steps": 2}})
    listed = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
    [checkpoint] = [c for c in listed if c["step_number"] == 2]  # (the one at 4 is the job's adapter)
    download = client.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints/{checkpoint['id']}/adapter")
    adapter = extract_adapter(download.content, tmp_path)
    assert adapter.name == checkpoint["fine_tuned_model_checkpoint"].replace(":", "-")
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    assert not (adapter / "optimizer.pt").exists()
    card = (adapter / "README.md").read_text()
    assert f"\n# {checkpoint['fine_tuned_model_checkpoint']}\n" in card and "At step 2," in card
    assert f"| loss | {checkpoint['metrics']['train_loss']:.4g} | null |" in card
    # Another job starts from it: its worker finds the adapter in the archive's folder.
    more = {"max_steps": 1}
    continued = train(client, training_file=chat_file, from_checkpoint=checkpoint["id"], qlora={"training": more})
    assert continued["from_checkpoint"] == checkpoint["id"]
