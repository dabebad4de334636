"""The speed settings of a job, resolved for the device it runs on.

None of them changes what is computed (the loss of a step is the same function of the
same examples); they change how much padding is processed, how many tokens one step
carries, whether activations are recomputed and which kernels run.

"auto" on a GPU: micro-batches of 16,384 tokens (8,192 when that saves recomputing
activations), gradient checkpointing only when the activations would not fit, Liger's
fused layer kernels when installed, fused AdamW, FlashAttention per packed example, and
unquantized weights kept in bf16. On a CPU: batches of batch_size examples,
checkpointing on, no Liger (it needs CUDA), plain AdamW, SDPA, peft's fp32 upcast.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from core.specs import ResolvedSpec, trains_on_token_budget
from worker.training.attention import available as varlen_available
from worker.training.runtime import Runtime

GPU_BUDGETS = (16384, 8192)
# Share of GPU memory the estimate may plan for: the rest absorbs allocator
# fragmentation, temporary buffers and the estimate's own error.
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class Speed:
    tokens_per_step: int | None
    gradient_checkpointing: bool
    liger_kernel: bool
    optimizer: str
    attention: str
    upcast_unquantized: bool

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def activation_bytes(config: Any, tokens: int, lora_dropout: bool) -> int:
    """Activations a decoder layer keeps for backward, summed over layers, in bf16.

    Per token and layer: the norms' outputs, q/k/v/o inputs and outputs, the attention
    output, the MLP's gate, up, activation and down input (the largest part), and, with
    LoRA dropout, one dropped-out copy of each adapted layer's input."""
    hidden, inter = config.hidden_size, config.intermediate_size
    kv = hidden * config.num_key_value_heads // config.num_attention_heads
    per_token = 10 * hidden + 2 * kv + 4 * inter
    if lora_dropout:
        per_token += 6 * hidden + inter
    return int(2 * tokens * config.num_hidden_layers * per_token)


def weight_bytes(config: Any, quantized: bool) -> int:
    """Frozen weights: 4-bit matrices (plus scales) or bf16, and bf16 embeddings and head."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = hidden * config.num_key_value_heads // config.num_attention_heads
    matrices = layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return int(matrices * (0.55 if quantized else 2) + 2 * embeddings)


def fits_without_checkpointing(config: Any, tokens: int, spec: ResolvedSpec, memory: int) -> bool:
    dropout = getattr(spec.qlora.adapter, "dropout", 0.0) > 0
    need = weight_bytes(config, spec.qlora.quantization is not None) + activation_bytes(config, tokens, dropout)
    return need < MEMORY_HEADROOM * memory


def resolve_speed(spec: ResolvedSpec, runtime: Runtime, config: Any) -> Speed:
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
            budget = next((b for b in candidates if fits_without_checkpointing(config, b, spec, memory)), candidates[0])
    checkpointing = perf.gradient_checkpointing
    if checkpointing == "auto":
        # A batch of DPO pairs is twice as many sequences (each prompt with either reply).
        sequences = spec.hparams.batch_size * (1 if supervised else 2)
        tokens = budget or sequences * spec.qlora.training.max_seq_length
        checkpointing = adapter != "prefix_tuning" and (
            not runtime.on_cuda or not fits_without_checkpointing(config, tokens, spec, memory)
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
    return Speed(budget, checkpointing, liger, optimizer, attention, upcast)
