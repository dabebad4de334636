"""Training throughput on one GPU: the default Hugging Face QLoRA stack (the baseline of
shared/bench-baseline.md, reproduced exactly) against this service's own training path
(worker.training.recipe.Recipe, the code every job runs), on the same random-weight
model and the same data, in one run.

    python bench/train_throughput.py --rows 8b              # baseline vs ours, Llama-3-8B shape
    python bench/train_throughput.py --rows 1b,equiv,long   # 1B shape, loss equivalence, 8k/16k context
    python bench/train_throughput.py --rows tiny --steps 3  # the same code on a CPU, as a dry run

Every variant runs in its own process (a fresh CUDA context, so peak memory is its own).
Models are written once under --models (safetensors) and reused. Data: token sequences
with log-normal lengths (median 300, sigma 0.8, clipped to 32..2048, seed 0).
Figures: real (non-padding) and padded tokens/s over the timed steps after warm-up,
peak memory (torch.cuda.max_memory_allocated), MFU against 790 TFLOP/s bf16 on the basis
of 4 x matmul parameters per token (+2 x when activations are recomputed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.model_shapes import LLAMA_1B, LLAMA_8B, LLAMA_70B, TINY  # noqa: E402  (after the path is set)

PEAK_FLOPS = 790e12
# The tiny shape with the vocabulary of random token ids the dry run trains on.
SHAPES: dict[str, dict[str, Any]] = {
    "70b": LLAMA_70B,
    "8b": LLAMA_8B,
    "1b": LLAMA_1B,
    "tiny": TINY | {"vocab_size": 1024},
}
# Written directly in 4 bits (bench/four_bit_model.py): in bf16 they would not fit the
# GPU machine's disk.
FOUR_BIT_SHAPES = {"70b"}


# -- model and data ----------------------------------------------------------------------------
def build_model(shape: str, models: Path) -> Path:
    """A random-weight Llama of the shape, as safetensors, with the project's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from worker.tiny_model import build_tokenizer

    target = models / f"llama-{shape}"
    if (target / "config.json").exists():
        return target
    config = LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=32768,
        rope_theta=500000.0,
        bos_token_id=0,
        eos_token_id=4,
        pad_token_id=5,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    staging = models / f".llama-{shape}.tmp"
    if shape in FOUR_BIT_SHAPES:
        from bench.four_bit_model import build_four_bit

        build_four_bit(config, staging, device)
    else:
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(staging, max_shard_size="5GB")
    build_tokenizer().save_pretrained(staging)
    staging.rename(target)
    return target


def lognormal_lengths(n: int, seed: int = 0) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.clip(np.exp(rng.normal(np.log(300), 0.8, n)), 32, 2048).astype(int).tolist()


def token_sequences(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    return [rng.integers(10, vocab, size=n).tolist() for n in lengths]


def matmul_params(shape: str) -> int:
    s = SHAPES[shape]
    h, inter, kv = (
        s["hidden_size"],
        s["intermediate_size"],
        s["hidden_size"] * s["num_key_value_heads"] // s["num_attention_heads"],
    )
    return s["num_hidden_layers"] * (2 * h * h + 2 * h * kv + 3 * h * inter) + s["vocab_size"] * h


# -- timing --------------------------------------------------------------------------------------
def step_timer(warmup: int):  # type: ignore[no-untyped-def]
    """A Trainer callback that times optimizer steps after `warmup` of them."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.start: tuple[float, int] | None = None
            self.end: tuple[float, int] | None = None
            self.losses: list[float] = []

        def on_step_end(self, args, state, control, **_):  # type: ignore[no-untyped-def]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            mark = (time.perf_counter(), state.num_input_tokens_seen)
            if state.global_step == warmup:
                self.start = mark
            elif state.global_step > warmup:
                self.end = mark

        def on_log(self, args, state, control, logs=None, **_):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def figures(self) -> dict[str, float]:
            assert self.start and self.end, "too few steps to time"
            seconds = self.end[0] - self.start[0]
            return {"seconds": seconds, "real_tokens": self.end[1] - self.start[1]}

    return StepTimer()


CATEGORIES = (
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("4-bit dequantize (bitsandbytes)", ("dequant", "kDequantize")),
    ("matmul", ("gemm", "cutlass", "nvjet", "sm90_xmma", "cublas", "wgmma")),
    ("triton (Liger, fused head)", ("triton",)),
    ("elementwise / copies", ("elementwise", "vectorized", "copy", "memcpy", "memset", "cat", "index")),
    ("reductions", ("reduce", "norm", "softmax")),
)


def profiler(warmup: int, steps: int = 2):  # type: ignore[no-untyped-def]
    """A Trainer callback profiling `steps` optimizer steps after `warmup`: where GPU time goes."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    ACTIVITY = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    SORT_KEY = "self_cuda_time_total" if cuda else "self_cpu_time_total"

    def self_time(event: Any) -> float:
        return event.self_device_time_total if cuda else event.self_cpu_time_total

    class Profiler(TrainerCallback):
        def __init__(self) -> None:
            self.prof: torch.profiler.profile | None = None
            self.report: dict[str, Any] = {}

        def on_step_end(self, args, state, control, **_):  # type: ignore[no-untyped-def]
            if state.global_step == warmup:
                self.prof = torch.profiler.profile(activities=[ACTIVITY])
                self.prof.__enter__()
            elif self.prof is not None and state.global_step == warmup + steps:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                events = self.prof.key_averages()
                total = sum(self_time(e) for e in events) or 1
                shares: dict[str, float] = {}
                for e in events:
                    name = e.key.lower()
                    category = next((c for c, keys in CATEGORIES if any(k.lower() in name for k in keys)), "other")
                    shares[category] = shares.get(category, 0) + self_time(e) / total
                self.report = {
                    "gpu_seconds_per_step": total / 1e6 / steps,
                    "shares": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
                    "top": events.table(sort_by=SORT_KEY, row_limit=20),
                }
                self.prof = None

    return Profiler()


def peak_memory_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


# -- the two training paths ------------------------------------------------------------------
def run_baseline(model_dir: Path, examples: list[list[int]], warmup: int, steps: int) -> dict[str, Any]:
    """shared/bench-baseline.md: HF Trainer, PEFT LoRA r16/a32/d0.05 all-linear, NF4 +
    double quant + bf16 compute, prepare_model_for_kbit_training (checkpointing on),
    paged_adamw_32bit, lr 2e-4, bf16, batch 8 padded to the longest, SDPA."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments

    cuda = torch.cuda.is_available()
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if cuda else torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quantization,
        dtype=torch.bfloat16 if cuda else torch.float32,
        device_map={"": 0 if cuda else "cpu"},
        attn_implementation="sdpa",
    )
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    padded_total, real_total = [0], [0]

    def pad_to_longest(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), longest), 5, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
            mask[i, : len(b["input_ids"])] = 1
        padded_total[0] += ids.numel()
        real_total[0] += int(mask.sum())
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    timer = step_timer(warmup)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=8,
        learning_rate=2e-4,
        bf16=cuda,
        use_cpu=not cuda,
        optim="paged_adamw_32bit" if cuda else "adamw_torch",
        max_steps=warmup + steps,
        logging_steps=1,
        gradient_checkpointing=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": examples}),
        data_collator=pad_to_longest,
        callbacks=[timer],
    )
    trainer.train()
    figures = timer.figures()
    return {
        **figures,
        "padded_ratio": padded_total[0] / real_total[0],
        "recompute": True,
        "peak_gib": peak_memory_gib(),
        "losses": timer.losses,
    }


def run_ours(
    model_dir: Path,
    examples: list[list[int]],
    warmup: int,
    steps: int,
    max_seq_length: int,
    performance: dict[str, Any],
    profile: bool = False,
) -> dict[str, Any]:
    """The service's recipe, as a job with the baseline's hyperparameters would run it."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from core.registry import ModelRef
    from core.specs import JobSpec, resolve
    from worker.training.recipe import Recipe
    from worker.training.reporting import ConsoleReporter
    from worker.training.runtime import pick_runtime

    asked = JobSpec.model_validate(
        {
            "model": model_dir.name,
            "training_file": "bench",
            "seed": 0,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
            "qlora": {
                "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.05},
                "training": {
                    "learning_rate": 2e-4,
                    "max_steps": warmup + steps,
                    "max_seq_length": max_seq_length,
                    "warmup_ratio": 0.0,
                },
                "performance": performance,
            },
        }
    )
    spec = resolve(asked, n_examples=len(examples), seed=0, data_format="text")
    reporter = ConsoleReporter(prefix="  ours ")
    recipe = Recipe(  # the examples come already tokenized: no data files
        spec,
        ModelRef(model_dir.name, str(model_dir), True),
        None,
        Path(tempfile.mkdtemp()),
        pick_runtime(),
        reporter,
    )
    dataset = Dataset.from_dict({"input_ids": examples, "completion_mask": [[1] * len(e) for e in examples]})
    timer = step_timer(warmup)
    callbacks = (timer, profiler(warmup)) if profile else (timer,)
    speed = recipe.train(dataset, None, AutoTokenizer.from_pretrained(model_dir), extra_callbacks=callbacks).speed
    return {
        **timer.figures(),
        "padded_ratio": 1.0,
        "recompute": speed.gradient_checkpointing,
        "peak_gib": peak_memory_gib(),
        "losses": timer.losses,
        "speed": speed.describe(),
        "profile": callbacks[-1].report if profile else None,
    }


# -- orchestration -------------------------------------------------------------------------------
def variant(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement, run in this (child) process."""
    shape, models = args.shape, Path(args.models)
    model_dir = build_model(shape, models)
    if args.length:  # long context: every example exactly this long
        examples = token_sequences([args.length] * (args.steps + args.warmup) * 2, SHAPES[shape]["vocab_size"])
        max_len = args.length
    else:
        examples = token_sequences(lognormal_lengths(args.examples), SHAPES[shape]["vocab_size"])
        max_len = 2048
    performance = json.loads(args.performance)
    try:
        if args.path == "baseline":
            result = run_baseline(model_dir, examples, args.warmup, args.steps)
        else:
            result = run_ours(model_dir, examples, args.warmup, args.steps, max_len, performance, args.profile)
    except Exception as exc:  # out of memory is a result here, not a crash
        if "out of memory" not in str(exc).lower():
            raise
        return {"error": f"out of memory ({str(exc).splitlines()[0][:120]})", "peak_gib": peak_memory_gib()}
    flops_per_token = (6 if result["recompute"] else 4) * matmul_params(shape)
    real = result["real_tokens"] / result["seconds"]
    return {
        **result,
        "real_tok_s": real,
        "padded_tok_s": real * result["padded_ratio"],
        "mfu_real": real * flops_per_token / PEAK_FLOPS,
        "mfu_padded": real * result["padded_ratio"] * flops_per_token / PEAK_FLOPS,
    }


def spawn(name: str, out: Path, **options: Any) -> dict[str, Any]:
    result_file = out / f"{name}.json"
    cmd = [sys.executable, __file__, "--variant", "--result", str(result_file)]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    print(f"== {name}: {' '.join(cmd[2:])}", flush=True)
    env = os.environ | {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    with (out / f"{name}.log").open("w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0 or not result_file.exists():
        tail = (out / f"{name}.log").read_text()[-3000:]
        print(tail, flush=True)
        return {"error": f"exit {code}"}
    result = json.loads(result_file.read_text())
    print(f"   {summary(result)}", flush=True)
    return result


def summary(r: dict[str, Any]) -> str:
    if "error" in r:
        return r["error"]
    return (
        f"{r['real_tok_s']:,.0f} real tok/s, {r['padded_tok_s']:,.0f} padded tok/s, "
        f"{r['peak_gib']:.1f} GiB, MFU {r['mfu_real']:.2f} real / {r['mfu_padded']:.2f} padded"
    )


def table(rows: list[tuple[str, dict[str, Any]]], baseline: dict[str, Any] | None) -> str:
    lines = [
        "| setup | real tokens/s | padded tokens/s | peak memory | MFU (real) | MFU (padded) | ours/baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | {r.get('peak_gib', float('nan')):.1f} GiB | | | |")
            continue
        ratio = (
            f"{r['real_tok_s'] / baseline['real_tok_s']:.2f}x"
            if baseline and "error" not in baseline and r is not baseline
            else ""
        )
        lines.append(
            f"| {name} | {r['real_tok_s']:,.0f} | {r['padded_tok_s']:,.0f} | {r['peak_gib']:.1f} GiB | "
            f"{r['mfu_real']:.2f} | {r['mfu_padded']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def one_variant(
    name: str,
    out: Path,
    models: str,
    shape: str,
    timing: tuple[int, int],
    performance: dict[str, Any],
    title: str,
    label: str,
) -> str:
    """A report section of one variant of ours (`timing`: timed and warm-up steps)."""
    steps, warmup = timing
    result = spawn(
        name,
        out,
        path="ours",
        shape=shape,
        steps=steps,
        warmup=warmup,
        models=models,
        performance=json.dumps(performance),
    )
    return f"### {title}\n\n" + table([(label, result)], None) + f"\n\nours resolved: {result.get('speed')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", default="8b", help="comma-separated: 8b, 1b, unfused, long, memory, equiv, profile, tiny"
    )
    parser.add_argument("--models", default=str(ROOT / "var" / "bench-models"))
    parser.add_argument("--out", default=str(ROOT / "var" / "bench-out"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--long-lengths", default="8192,16384")
    parser.add_argument("--skip-baseline", action="store_true", help="measure ours only (iterating on speed)")
    # internal: one variant in a child process
    parser.add_argument("--variant", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="8b", help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=4000, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--performance", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.models).mkdir(parents=True, exist_ok=True)
    if args.variant:
        Path(args.result).write_text(json.dumps(variant(args)))
        return

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"models": args.models, "warmup": args.warmup}
    report = []
    for row in args.rows.split(","):
        if row in ("8b", "1b", "tiny"):
            base = (
                {"error": "skipped"}
                if args.skip_baseline
                else spawn(f"{row}-baseline", out, path="baseline", shape=row, steps=args.steps, **common)
            )
            # Ours times fewer, larger steps: the same tokens in about a quarter of the steps.
            ours_steps = max(3, args.steps // 4)
            ours = spawn(
                f"{row}-ours",
                out,
                path="ours",
                shape=row,
                steps=ours_steps,
                **(common | {"warmup": max(2, args.warmup // 2)}),
            )
            report.append(
                f"### {row} shape, log-normal lengths (median 300)\n\n"
                + table([("baseline (HF default QLoRA)", base), ("ours (service recipe, auto)", ours)], base)
                + f"\n\nours resolved: {ours.get('speed')}"
            )
        elif row == "profile":
            shape = "tiny" if "tiny" in args.rows else "8b"
            prof = spawn(
                f"{shape}-profile", out, path="ours", shape=shape, steps=3, warmup=2, models=args.models, profile=1
            )
            details = prof.get("profile") or {}
            shares = details.get("shares", {})
            report.append(
                f"### where the GPU time goes (ours, {shape}, 2 profiled steps)\n\n"
                f"GPU time per step: {details.get('gpu_seconds_per_step', float('nan')):.3f} s; "
                f"wall time per step: {prof.get('seconds', float('nan')) / 3:.3f} s\n\n"
                + "\n".join(f"- {name}: {share:.1%}" for name, share in shares.items())
                + f"\n\n```\n{details.get('top', '')}\n```"
            )
        elif row == "equiv":
            # The same packed rows, seed and data: fast settings against the plain ones.
            plain = {
                "gradient_checkpointing": True,
                "liger_kernel": False,
                "optimizer": "adamw_torch",
                "attention": "sdpa",
                "upcast_unquantized": True,
            }
            fast = {
                "gradient_checkpointing": False,
                "liger_kernel": "auto",
                "optimizer": "adamw_torch",
                "attention": "auto",
            }
            shape = "1b" if "tiny" not in args.rows else "tiny"
            a = spawn(
                "equiv-plain",
                out,
                path="ours",
                shape=shape,
                steps=3,
                warmup=2,
                models=args.models,
                performance=json.dumps(plain),
            )
            b = spawn(
                "equiv-fast",
                out,
                path="ours",
                shape=shape,
                steps=3,
                warmup=2,
                models=args.models,
                performance=json.dumps(fast),
            )
            pairs = list(zip(a.get("losses", []), b.get("losses", []), strict=False))
            worst = max((abs(x - y) / abs(x) for x, y in pairs), default=float("nan"))
            report.append(
                "### loss equivalence (same seed, data and packed rows)\n\n"
                + "| step | plain (checkpointing, SDPA, no Liger, fp32 upcast) | fast (auto: varlen attention, Liger,"
                + " bf16 residual, checkpointing if needed) |\n|---|---|---|\n"
                + "\n".join(f"| {i + 1} | {x:.5f} | {y:.5f} |" for i, (x, y) in enumerate(pairs))
                + f"\n\nlargest relative difference: {worst:.2e}"
            )
        elif row == "70b":
            # The Llama-3-70B shape on one GPU, rows of 8,192 tokens of the same data.
            report.append(
                one_variant(
                    "70b-ours",
                    out,
                    args.models,
                    "70b",
                    (3, 1),
                    {"tokens_per_step": 8192},
                    "70b shape (written in 4 bits), 8,192-token packed rows",
                    "ours, 70b",
                )
            )
        elif row == "unfused":
            # The same as ours on the 8b shape, with peft's own LoRA forward: what the
            # fused LoRA layer (worker.training.fused_lora) buys.
            timing = (max(3, args.steps // 4), max(2, args.warmup // 2))
            report.append(
                one_variant(
                    "8b-ours-unfused",
                    out,
                    args.models,
                    "8b",
                    timing,
                    {"fused_lora": False},
                    "ours without the fused LoRA layer (8b)",
                    "ours, fused_lora off",
                )
            )
        elif row == "memory":
            # Memory against the baseline's at about the same tokens per step: ours with
            # activations recomputed, as the baseline does.
            report.append(
                one_variant(
                    "8b-ours-checkpointing",
                    out,
                    args.models,
                    "8b",
                    (5, 2),
                    {"gradient_checkpointing": True},
                    "ours with gradient checkpointing (8b, 8192 tokens per step)",
                    "ours, checkpointing on",
                )
            )
        elif row == "long":
            rows = []
            for length in map(int, args.long_lengths.split(",")):
                rows.append(
                    (
                        f"ours, 8b, {length} tokens per example",
                        spawn(
                            f"long-{length}",
                            out,
                            path="ours",
                            shape="8b",
                            steps=3,
                            warmup=1,
                            models=args.models,
                            length=length,
                            performance=json.dumps({"tokens_per_step": length}),
                        ),
                    )
                )
            report.append("### long context (8b shape)\n\n" + table(rows, None))
    text = "\n\n".join(report)
    (out / "report.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
