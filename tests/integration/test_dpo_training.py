"""DPO on the real path: a Celery worker process trains a LoRA adapter with TRL's
DPOTrainer on the 4-bit NF4 tiny Llama, streams its reward metrics, and the adapter it
publishes prefers the preferred replies more than the base does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.preference_format import to_pair
from core.preferences import EncodedPair, encode_pair
from core.registry import ModelRef
from core.tokenization import prepare_tokenizer
from tests.helpers import EXAMPLES, all_events, extract_adapter, upload_ok, wait_for

pytestmark = pytest.mark.slow


def _reply_logp(model: torch.nn.Module, prompt: list[int], reply: list[int]) -> float:
    """log p(reply | prompt), summed over the reply's tokens."""
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logps.gather(1, targets[:, None])[:, 0]
    return float(picked[len(prompt) - 1 :].sum())


def _mean_margin(model: torch.nn.Module, pairs: list[EncodedPair]) -> float:
    """Mean of log p(chosen) - log p(rejected) over the pairs."""
    margins = [
        _reply_logp(model, p.prompt_ids, p.chosen_ids) - _reply_logp(model, p.prompt_ids, p.rejected_ids) for p in pairs
    ]
    return sum(margins) / len(margins)


def test_dpo_trains_streams_rewards_and_widens_the_preferred_margin(  # type: ignore[no-untyped-def]
    client, worker, tiny_model: Path, tmp_path: Path
) -> None:
    training = upload_ok(client, (EXAMPLES / "preference.jsonl").read_bytes(), "preference.jsonl")
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": training,
            "seed": 3,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 4, "beta": 0.1}}},
            "qlora": {"adapter": {"r": 8, "alpha": 16}, "training": {"learning_rate": 0.01, "max_steps": 12}},
        },
    )
    assert created.status_code == 200, created.text
    job = wait_for(client, created.json()["id"], {"succeeded"})
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1 and job["trained_tokens"] > 0

    train = client.get(f"/v1/fine_tuning/jobs/{job['id']}/metrics").json()["data"]
    assert [m["step"] for m in train] == list(range(1, 13)) and all(m["split"] == "train" for m in train)
    assert all(m["loss"] is not None and m["rewards_margins"] is not None for m in train)
    assert all(0 <= m["rewards_accuracies"] <= 1 and m["rewards_chosen"] is not None for m in train)
    late = train[-4:]
    assert sum(m["rewards_margins"] for m in late) / 4 > 0, "the trained rewards do not prefer the chosen replies"
    messages = [e["message"] for e in all_events(client, job["id"])]
    assert any("by DPO (beta 0.1)" in m for m in messages)
    assert any(m.startswith("Step 12:") and "rewards_margins=" in m for m in messages)

    download = client.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter")
    assert download.status_code == 200
    adapter = extract_adapter(download.content, tmp_path)
    card = (adapter / "README.md").read_text()  # the model card: the method and its final reward figures
    assert "by DPO (beta 0.1)" in card and f"| reward margin | {train[-1]['rewards_margins']:.4g} |" in card

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    prepared = prepare_tokenizer(ModelRef("tiny-llama", str(tiny_model), True))
    rows = [json.loads(line) for line in (EXAMPLES / "preference.jsonl").read_text().splitlines()]
    pairs = [encode_pair(prepared, to_pair(row)) for row in rows]
    # The base as training saw it (NF4), the adapter on top: disabling the adapter is the
    # reference model DPO compared against.
    quantized = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model, quantization_config=quantized, device_map={"": "cpu"})
    tuned = PeftModel.from_pretrained(base, adapter).eval()
    with tuned.disable_adapter():
        before = _mean_margin(tuned, pairs)
    after = _mean_margin(tuned, pairs)
    assert after > before + 1.0, (
        f"the preferred replies' log-probability margin did not grow: {before:.3f} -> {after:.3f}"
    )
