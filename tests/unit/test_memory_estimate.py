"""The GPU memory estimate (core.memory_estimate) against the peaks measured on an H200
(BENCHMARKS.md: torch's max_memory_allocated, LoRA r=16 with dropout on all linear
layers, NF4 with double quantization), and how each setting moves it."""

from __future__ import annotations

import pytest

from core.memory_estimate import (
    ACTIVATION_MARGIN,
    FIXED_OVERHEAD,
    GIB,
    ModelShape,
    UnknownShape,
    adapter_parameters,
    estimate,
    least_memory,
)
from core.specs import JobSpec, ResolvedSpec, resolve
from worker import model_shapes

LLAMA_8B = ModelShape.from_config(model_shapes.LLAMA_8B)
LLAMA_1B = ModelShape.from_config(model_shapes.LLAMA_1B)


def spec(method: str = "supervised", **qlora: object) -> ResolvedSpec:
    asked = JobSpec.model_validate({"model": "m", "training_file": "f", "method": {"type": method}, "qlora": qlora})
    return resolve(asked, n_examples=1000, seed=0, data_format="preference" if method == "dpo" else "chat")


def allocated(shape: ModelShape, tokens: int, recompute: bool) -> float:
    """What torch would allocate at the peak: the estimate without its margin and overhead, GiB."""
    e = estimate(shape, spec(), tokens, recompute)
    return (e.weights + e.adapter + e.activations / ACTIVATION_MARGIN) / GIB


@pytest.mark.parametrize(
    ("shape", "tokens", "recompute", "measured"),
    [
        (LLAMA_8B, 8192, False, 60.6),  # the benchmark's auto row
        (LLAMA_8B, 8192, True, 9.7),  # gradient checkpointing forced on
        (LLAMA_8B, 16384, True, 13.9),  # every example 16,384 tokens long
        (LLAMA_1B, 16384, False, 30.6),  # the 1B shape's auto row
    ],
)
def test_the_estimate_is_within_5_percent_of_each_measured_peak_and_above_it_with_its_margins(
    shape: ModelShape, tokens: int, recompute: bool, measured: float
) -> None:
    assert allocated(shape, tokens, recompute) == pytest.approx(measured, rel=0.05)
    total = estimate(shape, spec(), tokens, recompute).total / GIB
    assert measured + 1 < total < measured * 1.3 + 2


def test_the_8b_shapes_parts() -> None:
    e = estimate(LLAMA_8B, spec(), 8192, recompute=False)
    # 7.0 B matrix weights at 0.516 bytes (NF4 + double quantization) and 1.05 B bf16 embedding and head weights.
    assert e.weights / GIB == pytest.approx(3.35 + 1.96, abs=0.02)
    # r=16 on all 7 linear layers of 32 layers: 41.9 M parameters, 16 bytes each.
    assert adapter_parameters(LLAMA_8B, spec()) == 41_943_040
    assert e.adapter == 41_943_040 * 16 and e.overhead == FIXED_OVERHEAD
    without_double_quant = estimate(LLAMA_8B, spec(quantization={"double_quant": False}), 8192, False)
    assert 0.3 * GIB < without_double_quant.weights - e.weights < 0.4 * GIB
    unquantized = estimate(LLAMA_8B, spec(quantization=None), 8192, False)
    assert unquantized.weights / GIB == pytest.approx(13.0 + 1.96, abs=0.05)


def test_activations_grow_with_tokens_and_shrink_with_recomputation_and_no_dropout() -> None:
    base = estimate(LLAMA_8B, spec(), 8192, False).activations
    assert estimate(LLAMA_8B, spec(), 16384, False).activations == pytest.approx(2 * base, rel=1e-6)
    assert estimate(LLAMA_8B, spec(), 8192, True).activations < base / 10
    assert estimate(LLAMA_8B, spec(adapter={"dropout": 0.0}), 8192, False).activations < 0.7 * base
    # Without Liger the supervised loss holds the logits: 8,192 x 128,256 x 10 bytes more.
    unfused = estimate(LLAMA_8B, spec(performance={"liger_kernel": False}), 8192, False).activations
    assert (unfused - base) / ACTIVATION_MARGIN == pytest.approx(8192 * 128256 * 10, rel=1e-6)


def test_least_memory_follows_the_workers_auto_settings() -> None:
    auto = least_memory(LLAMA_8B, spec())  # recomputation on, the fallback budget of 16,384 tokens
    assert (auto.tokens_per_step, auto.recompute) == (16384, True)
    off = least_memory(LLAMA_8B, spec(performance={"gradient_checkpointing": False}))
    assert (off.tokens_per_step, off.recompute) == (8192, False)
    fixed = least_memory(LLAMA_8B, spec(performance={"tokens_per_step": 4096, "gradient_checkpointing": True}))
    assert (fixed.tokens_per_step, fixed.recompute) == (4096, True)
    long_rows = least_memory(LLAMA_8B, spec(training={"max_seq_length": 32768}))
    assert long_rows.tokens_per_step == 32768
    # Padded batches: batch_size rows of max_seq_length; DPO pairs count twice.
    padded = spec(performance={"tokens_per_step": None}, training={"max_seq_length": 512})
    assert least_memory(LLAMA_8B, padded).tokens_per_step == padded.hparams.batch_size * 512
    dpo = spec("dpo", training={"max_seq_length": 512})
    assert least_memory(LLAMA_8B, dpo).tokens_per_step == 2 * dpo.hparams.batch_size * 512


def test_other_adapters_count_their_own_parameters() -> None:
    lora = adapter_parameters(LLAMA_8B, spec())
    assert adapter_parameters(LLAMA_8B, spec(adapter={"type": "loha", "r": 16})) == 2 * lora
    assert adapter_parameters(LLAMA_8B, spec(adapter={"r": 16, "target_modules": ["q_proj", "v_proj"]})) == 32 * 16 * (
        4096 + 4096 + 4096 + 1024
    )
    assert adapter_parameters(LLAMA_8B, spec(adapter={"type": "prompt_tuning", "num_virtual_tokens": 20})) == 20 * 4096
    assert adapter_parameters(LLAMA_8B, spec(adapter={"type": "ia3"})) == 32 * (1024 + 1024 + 14336)


def test_a_configuration_that_is_not_a_llama_like_decoder_has_no_shape() -> None:
    with pytest.raises(UnknownShape):
        ModelShape.from_config({"model_type": "gpt2", "n_embd": 768, "n_layer": 12})
