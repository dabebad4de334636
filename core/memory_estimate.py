"""How much GPU memory a job needs, per GPU, from its base model's configuration and its
resolved spec: plain arithmetic, no torch, so the API (at job creation), the pre-flight
worker (routing) and the training worker (its "auto" speed settings) share one formula.

    frozen weights      4-bit matrices (NF4/FP4, with or without double quantization)
                        + embeddings and LM head in the compute dtype
  + adapter state       trainable parameters x (fp32 weight + fp32 gradient + AdamW's two
                        fp32 moments)
  + activations         what backward keeps for one micro-step's tokens, with or without
                        recomputation, plus a margin for the caching allocator
  + fixed overhead      the CUDA context, cuBLAS/attention workspaces

Checked against the peaks measured on an H200 (BENCHMARKS.md, torch's
max_memory_allocated, so without the CUDA context) — the estimate is an upper bound,
as routing needs (a job sent to a GPU too small for it dies of out-of-memory):

  shape, tokens per step, recomputation   measured   estimate (of which overhead 2 GiB)
  8B, 8,192, off                           60.6 GiB   66.2 GiB   (+9%)
  8B, 8,192, on                             9.7 GiB   12.0 GiB
  8B, 16,384, on                           13.9 GiB   16.0 GiB
  1B, 16,384, off                          30.6 GiB   34.5 GiB   (+13%)

Without the margin and the overhead, the activations and weights alone come within 5%
of each measured peak (58.9, 9.6, 13.2 and 29.6 GiB): tests/unit/test_memory_estimate.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.specs import (
    IA3,
    AdaLora,
    LoHa,
    Lora,
    MultitaskPromptTuning,
    PrefixTuning,
    PromptTuning,
    PTuning,
    ResolvedSpec,
    trains_on_token_budget,
)

GIB = 1 << 30
# The CUDA context (~0.5-1 GiB with cuBLAS, Triton and FlashAttention kernels loaded) and
# the workspaces of cuBLAS and attention: none of it is in torch's allocation figures.
FIXED_OVERHEAD = 2 * GIB
# The caching allocator's fragmentation over packed rows of changing shape, and the
# backward pass's temporaries (a layer's gradients in flight, the chunked LM head's).
ACTIVATION_MARGIN = 1.10
# bitsandbytes' 4-bit layout: half a byte per weight, plus per block of 64 weights one
# fp32 absmax; with double quantization that absmax is itself 8-bit, with one fp32
# scale per 256 blocks.
FOUR_BIT_BYTES = 0.5 + 4 / 64
FOUR_BIT_DOUBLE_QUANT_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# A trainable parameter: fp32 weight (peft keeps adapters in fp32), its fp32 gradient
# and AdamW's two fp32 moments. 8-bit AdamW would need less; counted the same (upper bound).
ADAPTER_BYTES_PER_PARAMETER = 4 + 4 + 8
# The token budget the worker's "auto" may pick on a GPU (worker.training.speed).
AUTO_BUDGETS = (8192, 16384)
# Full logits per token and vocabulary entry, when no fused/chunked LM head avoids them:
# bf16 logits, their fp32 copy for the loss and its fp32 log-softmax.
UNFUSED_LOGITS_BYTES = 2 + 4 + 4
LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class UnknownShape(ValueError):
    """The model's configuration lacks what the estimate reads (not a Llama-like decoder)."""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Llama-like decoder (Llama, Mistral, Qwen2, Gemma...)."""

    hidden: int
    intermediate: int
    layers: int
    q_width: int  # attention heads x head dimension
    kv_width: int  # key/value heads x head dimension
    vocab: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a model's config.json (or a transformers config's to_dict())."""
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            head_dim = int(config.get("head_dim") or hidden // heads)
            return cls(
                hidden=hidden,
                intermediate=int(config["intermediate_size"]),
                layers=int(config["num_hidden_layers"]),
                q_width=heads * head_dim,
                kv_width=int(config.get("num_key_value_heads") or heads) * head_dim,
                vocab=int(config.get("vocab_size") or 32000),
                tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise UnknownShape(f"not a Llama-like decoder configuration ({exc!r} missing or invalid)") from exc

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer."""
        h, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    adapter: int
    activations: int
    overhead: int
    tokens_per_step: int
    recompute: bool

    @property
    def total(self) -> int:
        return self.weights + self.adapter + self.activations + self.overhead

    def describe(self) -> str:
        how = "with" if self.recompute else "without"
        return (
            f"{self.total / GIB:.1f} GiB: weights {self.weights / GIB:.1f}, adapter and optimizer "
            f"{self.adapter / GIB:.1f}, activations {self.activations / GIB:.1f} for {self.tokens_per_step:,} "
            f"tokens per step {how} recomputation, overhead {self.overhead / GIB:.1f}"
        )

    def figures(self) -> dict[str, int | bool]:
        return {
            "total_bytes": self.total,
            "weights_bytes": self.weights,
            "adapter_bytes": self.adapter,
            "activations_bytes": self.activations,
            "overhead_bytes": self.overhead,
            "tokens_per_step": self.tokens_per_step,
            "recompute": self.recompute,
        }


def weight_bytes(shape: ModelShape, spec: ResolvedSpec) -> int:
    """The frozen base: its decoder matrices in 4 bits (or the compute dtype when not
    quantized), embeddings and LM head unquantized (bitsandbytes leaves them out) in
    bf16, or fp32 when peft's upcast is asked for. Norms are negligible."""
    matrices = shape.layers * sum(i * o for i, o in shape.linears().values())
    q = spec.qlora.quantization
    per_weight = 2.0 if q is None else FOUR_BIT_DOUBLE_QUANT_BYTES if q.double_quant else FOUR_BIT_BYTES
    embeddings = shape.vocab * shape.hidden * (1 if shape.tied_embeddings else 2)
    unquantized = 4 if spec.qlora.performance.upcast_unquantized is True else 2
    return int(matrices * per_weight + embeddings * unquantized)


def _targets(shape: ModelShape, target_modules: str | list[str]) -> list[tuple[int, int]]:
    linears = shape.linears()
    names = LINEAR_NAMES if target_modules == "all-linear" else [n.rsplit(".", 1)[-1] for n in target_modules]
    return [linears[name] for name in names if name in linears]


def adapter_parameters(shape: ModelShape, spec: ResolvedSpec) -> int:
    """Trainable parameters of the job's adapter (per decoder layer, times the layers;
    prompt learning: its virtual tokens' embeddings)."""
    a = spec.qlora.adapter
    if isinstance(a, PrefixTuning):  # a key and a value per layer for each virtual token
        return a.num_virtual_tokens * 2 * shape.layers * shape.hidden
    if isinstance(a, PromptTuning | PTuning | MultitaskPromptTuning):
        return a.num_virtual_tokens * shape.hidden
    linears = shape.linears()
    if isinstance(a, IA3):  # a scaling vector per adapted layer: its input width for feed-forward ones
        feedforward = set(a.feedforward_modules)
        adapted = [m for m in a.target_modules if m in linears]
        return shape.layers * sum(linears[m][0] if m in feedforward else linears[m][1] for m in adapted)
    # LoRA-like: A (r x in) and B (out x r); LoHa two such pairs; DoRA adds a magnitude per output.
    rank = a.init_r if isinstance(a, AdaLora) else a.r
    targets = _targets(shape, a.target_modules)
    pairs = 2 if isinstance(a, LoHa) else 1
    magnitudes = sum(o for _, o in targets) if isinstance(a, Lora) and a.use_dora else 0
    return shape.layers * (pairs * rank * sum(i + o for i, o in targets) + magnitudes)


def layer_activation_elements(shape: ModelShape, lora_dropout: bool) -> int:
    """Elements one decoder layer keeps per token for backward: the input and output of
    both norms (the norm's output is the quantized layers' saved input), q, k and v and
    the attention output, the MLP's gate and up outputs and their product (down_proj's
    input); with LoRA dropout, the dropped-out copy of each adapted layer's input (q, k,
    v, o, gate, up: the hidden width; down: the intermediate)."""
    h, q, kv, i = shape.hidden, shape.q_width, shape.kv_width, shape.intermediate
    kept = 4 * h + 2 * q + 2 * kv + 3 * i
    if lora_dropout:
        kept += 3 * h + q + 2 * h + i
    return kept


def activation_bytes(shape: ModelShape, spec: ResolvedSpec, tokens: int, recompute: bool) -> int:
    """Activations of one micro-step of `tokens` tokens in the compute dtype (2 bytes).
    Without recomputation every layer keeps its own; with it, only each layer's input
    is kept, and one layer's activations exist again during its backward."""
    dropout = getattr(spec.qlora.adapter, "dropout", 0.0) > 0
    per_layer = layer_activation_elements(shape, dropout)
    per_token = shape.hidden * shape.layers + per_layer if recompute else per_layer * shape.layers
    logits = 0
    if spec.qlora.performance.liger_kernel is False and spec.method.type == "supervised":
        # Without Liger the supervised loss materializes the logits of the whole micro-step
        # (TRL's DPO always uses its own chunked LM head).
        logits = tokens * shape.vocab * UNFUSED_LOGITS_BYTES
    return int((2 * tokens * per_token + logits) * ACTIVATION_MARGIN)


def estimate(shape: ModelShape, spec: ResolvedSpec, tokens: int, recompute: bool) -> MemoryEstimate:
    """Memory of the job on one GPU at `tokens` per micro-step, with or without recomputation."""
    adapter = adapter_parameters(shape, spec) * ADAPTER_BYTES_PER_PARAMETER
    activations = activation_bytes(shape, spec, tokens, recompute)
    return MemoryEstimate(weight_bytes(shape, spec), adapter, activations, FIXED_OVERHEAD, tokens, recompute)


def padded_batch_tokens(spec: ResolvedSpec) -> int:
    """Tokens of a batch of batch_size examples at most max_seq_length long (a DPO
    batch of pairs is twice as many sequences: each prompt with either reply)."""
    sequences = spec.hparams.batch_size * (1 if spec.method.type == "supervised" else 2)
    return sequences * spec.qlora.training.max_seq_length


def least_memory(shape: ModelShape, spec: ResolvedSpec) -> MemoryEstimate:
    """What the job needs at the least: its explicit settings as they are, and its "auto"
    ones as a worker resolves them on a GPU just large enough (worker.training.speed):
    recomputation on (prefix tuning cannot), and packed rows of 16,384 tokens, the
    budget it falls back to when 8,192 would not fit without recomputation (8,192 when
    recomputation is explicitly off)."""
    perf, adapter = spec.qlora.performance, spec.qlora.adapter.type
    checkpointing = perf.gradient_checkpointing
    recompute = checkpointing if isinstance(checkpointing, bool) else adapter != "prefix_tuning"
    if isinstance(perf.tokens_per_step, int):
        tokens = perf.tokens_per_step
    elif perf.tokens_per_step == "auto" and trains_on_token_budget(adapter) and spec.method.type == "supervised":
        tokens = max(AUTO_BUDGETS[1] if recompute else AUTO_BUDGETS[0], spec.qlora.training.max_seq_length)
    else:
        tokens = padded_batch_tokens(spec)
    return estimate(shape, spec, tokens, recompute)
