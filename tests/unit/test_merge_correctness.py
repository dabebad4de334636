"""The merge is exact: for every method that can merge, an adapter trained by the recipe
on the tiny model, merged by the service's merge function (worker.merging) and saved as
sharded safetensors, computes the same logits as the full-precision base with the
adapter applied unmerged (PeftModel), within TOLERANCE in float32.

The check can fail: the base alone (a merge that was skipped) and, for LoRA, a merge into
the 4-bit model are each far from it. Prompt-learning adapters are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from core.specs import Quantization
from tests.helpers import EXAMPLES
from worker.merging import AdapterNotMergeable, load_full_precision, merge_adapter
from worker.training.__main__ import main as train_recipe

pytestmark = pytest.mark.slow

# Max abs logit difference, float32 on a CPU: measured at most 4.8e-7 over the methods.
TOLERANCE = 1e-5
# The adapters' own effect on the logits is at least this (measured 6.7e-3, AdaLoRA).
ADAPTER_EFFECT = 100 * TOLERANCE
METHODS = {
    "lora": {},
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "adalora": {"type": "adalora"},
    "ia3": {"type": "ia3"},
    "loha": {"type": "loha"},
    "lokr": {"type": "lokr"},
}
# LoRA merges into bitsandbytes' 4-bit layers (rounding the merged weights to 4 bits);
# peft refuses AdaLoRA and IA3 there, and LoHa and LoKr train on the unquantized base.
MERGES_INTO_4BIT = ("lora", "dora", "rslora")
INPUT = torch.randint(6, 690, (2, 48), generator=torch.Generator().manual_seed(0))


def trained(tiny_model: Path, directory: Path, adapter: dict[str, object]) -> Path:
    """An adapter trained for a few steps by the recipe (on the 4-bit base, as jobs train)."""
    spec = {"seed": 0, "qlora": {"adapter": adapter, "training": {"max_steps": 5, "learning_rate": 0.01}}}
    data = str(EXAMPLES / "chat.jsonl")
    return train_recipe(
        ["--model", str(tiny_model), "--data", data, "--spec", json.dumps(spec), "--output", str(directory)]
    )


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        result: torch.Tensor = model(INPUT).logits
    return result


def full_precision(tiny_model: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def in_4_bits(tiny_model: Path) -> torch.nn.Module:
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    return AutoModelForCausalLM.from_pretrained(tiny_model, quantization_config=quantization, device_map={"": "cpu"})


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("method", METHODS)
def test_the_merged_model_computes_what_the_base_with_its_adapter_does(
    method: str, tiny_model: Path, tmp_path: Path
) -> None:
    adapter = trained(tiny_model, tmp_path / "adapter", METHODS[method])
    result = merge_adapter(tiny_model, adapter, tmp_path / "merged", max_shard_size="200KB")
    assert (result.device, result.dtype) == ("cpu", "float32")  # the base's own dtype on a CPU
    assert result.shards > 1 and (tmp_path / "merged" / "model.safetensors.index.json").is_file()

    base = logits(full_precision(tiny_model))
    unmerged = logits(PeftModel.from_pretrained(full_precision(tiny_model), adapter).eval())
    merged = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"))
    assert largest_difference(merged, unmerged) <= TOLERANCE
    assert largest_difference(base, unmerged) > ADAPTER_EFFECT  # skipping the merge would fail

    if method in MERGES_INTO_4BIT:  # merging into the 4-bit model would fail
        into_4_bits = PeftModel.from_pretrained(in_4_bits(tiny_model), adapter).merge_and_unload()
        assert largest_difference(logits(into_4_bits), unmerged) > ADAPTER_EFFECT


def test_a_merge_into_the_dequantized_base_computes_what_the_trained_4_bit_model_does(
    tiny_model: Path, tmp_path: Path
) -> None:
    adapter = trained(tiny_model, tmp_path / "adapter", {})
    quantization = Quantization()  # the job's: NF4, double quantization
    merge_adapter(tiny_model, adapter, tmp_path / "dequantized", dequantize_from=quantization)
    merge_adapter(tiny_model, adapter, tmp_path / "original")
    dequantized_base = load_full_precision(tiny_model, "float32", "cpu", quantization)
    unmerged = logits(PeftModel.from_pretrained(dequantized_base, adapter).eval())
    merged = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "dequantized"))
    assert largest_difference(merged, unmerged) <= TOLERANCE  # the merge itself is exact

    # Much closer to the model the adapter was trained on than the merge into the original weights.
    as_trained = logits(PeftModel.from_pretrained(in_4_bits(tiny_model), adapter).eval())
    original = logits(AutoModelForCausalLM.from_pretrained(tmp_path / "original"))
    assert float((merged - as_trained).abs().mean()) < float((original - as_trained).abs().mean()) / 5


def test_a_merge_in_another_dtype_has_weights_in_it(tiny_model: Path, tmp_path: Path) -> None:
    adapter = trained(tiny_model, tmp_path / "adapter", {"r": 4})
    result = merge_adapter(tiny_model, adapter, tmp_path / "merged", dtype="bfloat16")
    assert result.dtype == "bfloat16" and result.shards == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_prompt_learning_adapter_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    adapter = trained(tiny_model, tmp_path / "adapter", {"type": "prompt_tuning", "num_virtual_tokens": 4})
    with pytest.raises(AdapterNotMergeable, match="PROMPT_TUNING adapter trains virtual tokens"):
        merge_adapter(tiny_model, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
