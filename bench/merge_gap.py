"""The QLoRA merge gap: a QLoRA adapter is trained against the 4-bit (NF4) base, but the
service merges it into the full-precision base, whose weights differ from the 4-bit ones
by the quantization error. How far is the merged model from the model the adapter was
trained on (4-bit base + adapter)? And the full-precision base with the adapter
unmerged (what serving the adapter with PEFT on a bf16 base gives)? The merge into the
dequantized 4-bit weights (the merge's `base_weights: "dequantized"`) is shown beside
them. The adapter is taken to be trained on NF4 with double quantization (the default).

    python bench/merge_gap.py                       # the tiny model, a LoRA trained here for 30 steps
    python bench/merge_gap.py --model DIR --adapter ADAPTER_DIR   # any base and its QLoRA adapter

Figures over the tokens of the validation conversations (examples/chat_validation.jsonl
rendered with the chat template): the max and mean absolute logit difference from the
4-bit base + adapter, and the share of positions whose most likely next token agrees.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def trained_adapter(model: Path, steps: int, target: Path) -> Path:
    """A LoRA adapter trained by the service's recipe with its defaults (NF4, double
    quantization, r=16 on all linear layers)."""
    from worker.training.__main__ import main as train_recipe

    spec = {"seed": 0, "qlora": {"training": {"max_steps": steps, "learning_rate": 0.01}}}
    data = str(ROOT / "examples" / "chat.jsonl")
    return train_recipe(["--model", str(model), "--data", data, "--spec", json.dumps(spec), "--output", str(target)])


def conversations(model: Path, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lines = (ROOT / "examples" / "chat_validation.jsonl").read_text().splitlines()[:n]
    texts = [tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=False) for line in lines]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a base model directory (default: the tiny model, built here)")
    parser.add_argument("--adapter", type=Path, help="a QLoRA adapter of it (default: trained here)")
    parser.add_argument("--steps", type=int, default=30, help="training steps of the adapter trained here")
    parser.add_argument("--examples", type=int, default=8, help="validation conversations to compare on")
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from core.specs import Quantization
    from worker.merging import default_device, load_full_precision, merge_adapter
    from worker.tiny_model import ensure_tiny_llama
    from worker.training.runtime import pick_runtime

    workdir = Path(tempfile.mkdtemp(prefix="merge-gap-"))
    model = args.model or ensure_tiny_llama(workdir / "models")
    adapter = args.adapter or trained_adapter(model, args.steps, workdir / "adapter")
    device, runtime = default_device(), pick_runtime()

    def in_4_bits() -> Any:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=runtime.torch_dtype,
        )
        return AutoModelForCausalLM.from_pretrained(
            model, quantization_config=quantization, dtype=runtime.torch_dtype, device_map={"": device}
        )

    merged = merge_adapter(model, adapter, workdir / "merged", device=device)
    merge_adapter(model, adapter, workdir / "dequantized", device=device, dequantize_from=Quantization())
    variants: dict[str, Callable[[], Any]] = {
        "4-bit base + adapter (as trained)": lambda: PeftModel.from_pretrained(in_4_bits(), adapter),
        f"{merged.dtype} base + adapter, unmerged": lambda: PeftModel.from_pretrained(
            load_full_precision(model, merged.dtype, device), adapter
        ),
        f"merged into the {merged.dtype} base (base_weights: original, the default)": lambda: load_full_precision(
            workdir / "merged", merged.dtype, device
        ),
        "merged into the dequantized 4-bit base (base_weights: dequantized)": lambda: load_full_precision(
            workdir / "dequantized", merged.dtype, device
        ),
        "4-bit base alone (no adapter)": in_4_bits,
    }
    sequences = conversations(model, args.examples)
    outputs: dict[str, list[torch.Tensor]] = {}
    for name, load in variants.items():
        network = load().eval()
        with torch.no_grad():
            outputs[name] = [network(torch.tensor([ids], device=device)).logits[0].float().cpu() for ids in sequences]
        del network
    reference = next(iter(outputs.values()))
    tokens = sum(len(ids) for ids in sequences)
    print(f"{model.name}, {tokens} tokens of {len(sequences)} conversations, on {device}\n")
    print("| compared with the 4-bit base + adapter | max abs logit diff | mean abs logit diff | argmax agreement |")
    print("|---|---|---|---|")
    for name, logits in list(outputs.items())[1:]:
        diffs = [(a - b).abs() for a, b in zip(logits, reference, strict=True)]
        largest = max(float(d.max()) for d in diffs)
        mean = sum(float(d.sum()) for d in diffs) / sum(d.numel() for d in diffs)
        agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(logits, reference, strict=True))
        print(f"| {name} | {largest:.4g} | {mean:.4g} | {agree / tokens:.2%} |")
    scale = sum(float(t.abs().sum()) for t in reference) / sum(t.numel() for t in reference)
    print(f"\nmean abs logit of the 4-bit base + adapter: {scale:.4g}")


if __name__ == "__main__":
    main()
