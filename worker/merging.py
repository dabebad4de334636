"""An adapter merged into its base model, the way every merge runs (worker.merge_runner)
and bench/merge_time.py times it: the base loaded in full precision (bfloat16 on a GPU,
its own dtype on a CPU; never the 4-bit model the adapter was trained on, whose
rounding would swallow most of the update), the adapter applied with peft and folded
into the weights (`merge_and_unload`), saved as sharded safetensors with the tokenizer
and chat template the adapter was trained with and the base's generation config.

The base's weights are its own by default. With `dequantize_from` (the quantization a
QLoRA adapter was trained on), they are the 4-bit weights the adapter was trained
against, dequantized to full precision: the merged model then computes what the
trained 4-bit model did (bench/merge_gap.py measures both).

LoRA (with DoRA or rsLoRA), AdaLoRA, IA3, LoHa and LoKr merge; prompt-learning adapters
(prompt, prefix, P-tuning, multitask prompt tuning) change no weight and cannot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from core.specs import Quantization
from worker.training.runtime import DTYPES, four_bit_config

WEIGHTS = "*.safetensors"


class AdapterNotMergeable(ValueError):
    """A prompt-learning adapter: nothing in it changes the base model's weights."""


@dataclass
class MergeResult:
    directory: Path
    device: str
    dtype: str
    # Seconds per phase: load (base and adapter), merge, save.
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def shards(self) -> int:
        return len(list(self.directory.glob(WEIGHTS)))

    @property
    def weight_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob(WEIGHTS))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def merge_dtype(asked: str, device: str, base_config: Any) -> str:
    """The merged weights' dtype: `asked`, or for "auto" bfloat16 on a GPU (float16 on
    one without bfloat16) and the base's own dtype on a CPU."""
    if asked != "auto":
        return asked
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    own = getattr(base_config, "dtype", None)
    name = str(own).removeprefix("torch.") if own is not None else "float32"
    return name if name in DTYPES else "float32"


def load_full_precision(
    base: str | Path, dtype: str, device: str, dequantize_from: Quantization | None = None
) -> PreTrainedModel:
    """The base in `dtype`: its own weights, or (`dequantize_from`) those weights
    quantized to 4 bits as training quantized them, then dequantized."""
    quantization = four_bit_config(dequantize_from, DTYPES[dtype])
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        str(base),
        dtype=DTYPES[dtype],
        quantization_config=quantization,
        device_map={"": device},
        use_safetensors=True,
        trust_remote_code=False,
    )
    if quantization is not None:
        dequantized: PreTrainedModel = model.dequantize(dtype=DTYPES[dtype])
        return dequantized
    return model


def check_mergeable(adapter: Path) -> None:
    config = PeftConfig.from_pretrained(str(adapter))
    if config.is_prompt_learning:
        raise AdapterNotMergeable(
            f"a {config.peft_type} adapter trains virtual tokens put before the input, not changes to the model's "
            "weights: there is nothing to merge"
        )


def _tokenizer_source(adapter: Path, base: str | Path) -> str:
    """The tokenizer the adapter was trained with (saved beside it, with the chat template
    training rendered the data with), else the base's."""
    return str(adapter if (adapter / "tokenizer_config.json").is_file() else base)


def merge_adapter(
    base: str | Path,
    adapter: Path,
    output: Path,
    *,
    dtype: str = "auto",
    device: str | None = None,
    max_shard_size: str = "5GB",
    dequantize_from: Quantization | None = None,
) -> MergeResult:
    """Merge the PEFT adapter directory `adapter` into the model directory `base` and
    write the merged model to `output` (created)."""
    device = device or default_device()
    check_mergeable(adapter)
    chosen = merge_dtype(dtype, device, AutoConfig.from_pretrained(str(base), trust_remote_code=False))
    result = MergeResult(output, device, chosen)
    started = time.monotonic()
    peft_model = PeftModel.from_pretrained(load_full_precision(base, chosen, device, dequantize_from), str(adapter))
    loaded = time.monotonic()
    # safe_merge: each merged weight is checked for NaNs before it replaces the original.
    merged = peft_model.merge_and_unload(safe_merge=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    merged_at = time.monotonic()
    merged.save_pretrained(str(output), max_shard_size=max_shard_size)
    AutoTokenizer.from_pretrained(_tokenizer_source(adapter, base), trust_remote_code=False).save_pretrained(
        str(output)
    )
    result.seconds = {
        "load": round(loaded - started, 3),
        "merge": round(merged_at - loaded, 3),
        "save": round(time.monotonic() - merged_at, 3),
    }
    return result
