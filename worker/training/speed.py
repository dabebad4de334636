"""The speed settings of a job, resolved for the device it runs on.

None of them changes what is computed (the loss of a step is the same function of the
same examples); they change how much padding is processed, how many tokens one step
carries, whether activations are recomputed and which kernels run.

"auto" on a GPU: micro-batches of 16,384 tokens (8,192 when that saves recomputing
activations), gradient checkpointing only when the activations would not fit, Liger's
fused layer kernels when installed, fused AdamW, FlashAttention per packed example, and
unquantized weights kept in bf16, LoRA fused into its 4-bit layer's matmuls. On a CPU: batches of batch_size examples,
checkpointing on, no Liger (it needs CUDA), plain AdamW, SDPA, peft's fp32 upcast, peft's own LoRA forward.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from core.memory_estimate import ModelShape, estimate
from core.specs import ResolvedSpec, trains_on_token_budget
from worker.training.attention import available as varlen_available
from worker.training.runtime import Runtime

GPU_BUDGETS = (16384, 8192)
# Share of GPU memory a setting that spends memory for speed may plan for (the estimate,
# core.memory_estimate, is an upper bound already): what is left stays for longer rows
# than the planned ones and for other processes on the device.
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class Speed:
    tokens_per_step: int | None
    gradient_checkpointing: bool
    liger_kernel: bool
    optimizer: str
    attention: str
    upcast_unquantized: bool
    fused_lora: bool

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def fits_without_checkpointing(shape: ModelShape, tokens: int, spec: ResolvedSpec, memory: int) -> bool:
    return estimate(shape, spec, tokens, recompute=False).total < MEMORY_HEADROOM * memory


def resolve_speed(spec: ResolvedSpec, runtime: Runtime, shape: ModelShape) -> Speed:
    perf, adapter = spec.qlora.performance, spec.qlora.adapter.type
    memory = runtime.memory_bytes
    asked = perf.tokens_per_step
    budget = asked if isinstance(asked, int) else None
    # Preference pairs train on padded batches of pairs (TRL's DPO packs nothing).
    supervised = spec.method.type == "supervised"
    if asked == "auto":
        if runtime.on_cuda and trains_on_token_budget(adapter) and supervised:
            floor = spec.qlora.training.max_seq_length
            candidates = [max(b, floor) for b in GPU_BUDGETS]
            budget = next((b for b in candidates if fits_without_checkpointing(shape, b, spec, memory)), candidates[0])
    checkpointing = perf.gradient_checkpointing
    if checkpointing == "auto":
        # A batch of DPO pairs is twice as many sequences (each prompt with either reply).
        sequences = spec.hparams.batch_size * (1 if supervised else 2)
        tokens = budget or sequences * spec.qlora.training.max_seq_length
        checkpointing = adapter != "prefix_tuning" and (
            not runtime.on_cuda or not fits_without_checkpointing(shape, tokens, spec, memory)
        )
    liger = perf.liger_kernel
    if liger == "auto":
        # TRL's DPO computes log-probabilities with its own fused LM head (Liger is deprecated there).
        liger = runtime.on_cuda and supervised and importlib.util.find_spec("liger_kernel") is not None
    optimizer = perf.optimizer
    if optimizer == "auto":
        optimizer = "adamw_torch_fused" if runtime.on_cuda else "adamw_torch"
    attention = perf.attention
    if attention == "auto":
        packed = budget is not None or spec.qlora.data.packing
        attention = "torch_varlen" if packed and runtime.on_cuda and varlen_available() else "sdpa"
    upcast = perf.upcast_unquantized
    if upcast == "auto":
        upcast = not (runtime.on_cuda and runtime.compute_dtype == "bfloat16")
    fused = perf.fused_lora
    if fused == "auto":
        fused = runtime.on_cuda
    fused = fused and adapter == "lora" and spec.qlora.quantization is not None
    return Speed(budget, checkpointing, liger, optimizer, attention, upcast, fused)
