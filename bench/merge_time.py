"""How long a merge takes: the service's merge function (worker.merging.merge_adapter:
the base loaded in bf16, a LoRA adapter applied, merged, saved as sharded safetensors
with the tokenizer), then the archive a merge publishes (one uncompressed .tar of one
folder through the storage writer, with its sha256), on a Llama-3-8B-shaped model with
random bf16 weights and a random LoRA r=16 adapter on all linear layers.

    python bench/merge_time.py --out /tmp/merge-bench            # 8B shape on the GPU
    python bench/merge_time.py --out /tmp/merge-bench --small    # the tiny shape, on a CPU, in seconds

The base model is written once under --out (reused by later runs); the merged model and
the archive are written anew each run and removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_throughput import build_model  # noqa: E402  (after the path is set)


def random_lora(base: Path, target: Path, r: int = 16, seed: int = 0) -> Path:
    """A LoRA adapter (r, alpha 2r, all linear layers) with random A and B matrices, in
    PEFT's format, built on a weightless (meta) copy of the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    if (target / "adapter_config.json").exists():
        return target
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(skeleton, config)
    generator = torch.Generator().manual_seed(seed)
    weights = {
        name: (torch.randn(tuple(p.shape), generator=generator) * 0.01).to(torch.bfloat16)
        for name, p in peft_model.named_parameters()
        if "lora_" in name
    }
    target.mkdir(parents=True)
    save_file(get_peft_model_state_dict(peft_model, state_dict=weights), str(target / "adapter_model.safetensors"))
    peft_model.peft_config["default"].save_pretrained(str(target))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="working directory (the base model is kept there)")
    parser.add_argument("--small", action="store_true", help="the tiny shape: a dry run on a CPU")
    parser.add_argument("--max-shard-size", default="5GB")
    parser.add_argument("--keep", action="store_true", help="keep the merged model and its archive")
    args = parser.parse_args()

    import torch

    from core.storage import LocalStorage
    from worker.archives import archive
    from worker.merging import default_device, merge_adapter

    shape = "tiny" if args.small else "8b"
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = build_model(shape, args.out)
    adapter = random_lora(base, args.out / f"lora-r16-{shape}")
    print(f"base {base} and adapter ready in {time.monotonic() - started:.1f} s", flush=True)

    merged, storage = args.out / "merged", LocalStorage(args.out / "storage")
    shutil.rmtree(merged, ignore_errors=True)
    device = default_device()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.monotonic()
    result = merge_adapter(base, adapter, merged, device=device, max_shard_size=args.max_shard_size)
    merge_seconds = time.monotonic() - started
    started = time.monotonic()
    stored = archive(storage, "merged.tar", merged.iterdir(), compress=False, folder="merged")
    archive_seconds = time.monotonic() - started
    figures = {
        "shape": shape,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "dtype": result.dtype,
        "load_s": result.seconds["load"],
        "merge_s": result.seconds["merge"],
        "save_s": result.seconds["save"],
        "merge_adapter_s": round(merge_seconds, 2),
        "archive_s": round(archive_seconds, 2),
        "total_s": round(merge_seconds + archive_seconds, 2),
        "shards": result.shards,
        "weight_gib": round(result.weight_bytes / 2**30, 2),
        "archive_gib": round(stored.bytes / 2**30, 2),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None,
    }
    print(json.dumps(figures, indent=2))
    print(
        f"\n| shape | device | load | merge | save | merge_adapter | archive (tar + sha256) | total | weights |\n"
        f"|---|---|---|---|---|---|---|---|---|\n"
        f"| {shape} | {figures['device']} | {figures['load_s']} s | {figures['merge_s']} s | {figures['save_s']} s "
        f"| {figures['merge_adapter_s']} s | {figures['archive_s']} s | {figures['total_s']} s "
        f"| {figures['weight_gib']} GiB in {figures['shards']} shards |"
    )
    if not args.keep:
        shutil.rmtree(merged, ignore_errors=True)
        shutil.rmtree(args.out / "storage", ignore_errors=True)


if __name__ == "__main__":
    main()
