"""Multi-GPU scaling: training tokens/s of the service's recipe (worker.training.recipe,
what every job runs) on 2 GPUs of one host against 1, on the Llama-3-8B shape with random
weights, in one run. The 2-GPU run is a job's: one rank per GPU with DDP over NCCL
(worker.training.distributed), each loading the 4-bit base on its own GPU and training on
its share of every step's batch; the 1-GPU run is the same recipe alone. Target: 2 GPUs
at least 1.8x one.

    python bench/multi_gpu_scaling.py                         # 8b shape, needs 2 GPUs
    python bench/multi_gpu_scaling.py --shape tiny --steps 3  # the same code on a CPU (gloo), a dry run

The model, data and timing are bench/train_throughput.py's (log-normal lengths, median
300; tokens/s over the timed steps after warm-up, non-padding tokens summed over ranks).
Each run is a process of its own (the 2-GPU one started by torchrun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_throughput import SHAPES, build_model, lognormal_lengths, run_ours, token_sequences  # noqa: E402


def measure(args: argparse.Namespace) -> None:
    """One run, in this process: a rank of torchrun's when WORLD_SIZE is set."""
    from worker.training import distributed

    if "WORLD_SIZE" in os.environ:
        distributed.join()
    examples = token_sequences(lognormal_lengths(args.examples), SHAPES[args.shape]["vocab_size"])
    model = build_model(args.shape, Path(args.models))
    result = run_ours(model, examples, args.warmup, args.steps, 2048, {})
    if distributed.is_main():
        figures = {"ranks": distributed.world_size(), "tok_s": result["real_tokens"] / result["seconds"]}
        Path(args.result).write_text(json.dumps(result | figures))
    distributed.leave()


def run(name: str, gpus: int, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    result = out / f"{name}.json"
    options = ["--measure", "--result", str(result), "--shape", args.shape, "--models", args.models]
    options += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--examples", str(args.examples)]
    if gpus == 1:
        command = [sys.executable, __file__, *options]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
        command = [*launcher, __file__, *options]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    env = os.environ | {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    with (out / f"{name}.log").open("w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0 or not result.exists():
        print((out / f"{name}.log").read_text()[-3000:], flush=True)
        raise SystemExit(f"{name}: exit {code}")
    measured: dict[str, Any] = json.loads(result.read_text())
    print(f"   {measured['tok_s']:,.0f} tokens/s, {measured['peak_gib']:.1f} GiB peak on rank 0", flush=True)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8b", choices=sorted(SHAPES))
    parser.add_argument("--models", default=str(ROOT / "var" / "bench-models"))
    parser.add_argument("--out", default=str(ROOT / "var" / "bench-out"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--examples", type=int, default=4000)
    # internal: one run in a child process (or one rank of it)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.models).mkdir(parents=True, exist_ok=True)
    if args.measure:
        measure(args)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    build_model(args.shape, Path(args.models))  # once, before either run times anything
    one, two = run(f"{args.shape}-1gpu", 1, args), run(f"{args.shape}-2gpu", 2, args)
    scaling = two["tok_s"] / one["tok_s"]
    text = (
        f"### {args.shape} shape, 2 GPUs against 1 (DDP, the service's recipe)\n\n"
        "| GPUs | tokens/s | peak memory (rank 0) | scaling |\n|---|---|---|---|\n"
        f"| 1 | {one['tok_s']:,.0f} | {one['peak_gib']:.1f} GiB | 1.00x |\n"
        f"| 2 | {two['tok_s']:,.0f} | {two['peak_gib']:.1f} GiB | {scaling:.2f}x |\n\n"
        f"target: at least 1.80x ({'met' if scaling >= 1.8 else 'missed'})"
    )
    (Path(args.out) / "multi_gpu_scaling.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
