"""How each job's speed settings are resolved for the device it runs on."""

from __future__ import annotations

import pytest

from core.memory_estimate import GIB, ModelShape, estimate
from core.specs import JobSpec, ResolvedSpec, resolve
from worker import model_shapes
from worker.training.runtime import Runtime, pick_runtime
from worker.training.speed import fits_without_checkpointing, resolve_speed

LLAMA_8B = ModelShape.from_config(model_shapes.LLAMA_8B)
H200 = Runtime("cuda:0", "NVIDIA H200", "bfloat16", 150_109_880_320)
A100_40GB = Runtime("cuda:0", "NVIDIA A100-SXM4-40GB", "bfloat16", 42_949_672_960)


def spec(**qlora: object) -> ResolvedSpec:
    asked = JobSpec.model_validate({"model": "m", "training_file": "f", "qlora": qlora})
    return resolve(asked, n_examples=1000, seed=0, data_format="chat")


def test_cpu_keeps_the_plain_recipe() -> None:
    speed = resolve_speed(spec(), pick_runtime(), LLAMA_8B)
    assert speed.tokens_per_step is None and speed.gradient_checkpointing and not speed.liger_kernel
    assert (speed.optimizer, speed.attention, speed.upcast_unquantized) == ("adamw_torch", "sdpa", True)
    assert not speed.fused_lora


def test_a_large_gpu_packs_8k_rows_without_recomputation() -> None:
    speed = resolve_speed(spec(), H200, LLAMA_8B)
    assert speed.tokens_per_step == 8192 and not speed.gradient_checkpointing
    assert speed.optimizer == "adamw_torch_fused" and not speed.upcast_unquantized
    assert speed.fused_lora


def test_fused_lora_applies_to_lora_on_a_quantized_base_only() -> None:
    assert not resolve_speed(
        spec(adapter={"type": "lora", "use_dora": False}, quantization=None), H200, LLAMA_8B
    ).fused_lora
    assert not resolve_speed(spec(adapter={"type": "ia3"}), H200, LLAMA_8B).fused_lora
    assert not resolve_speed(spec(performance={"fused_lora": False}), H200, LLAMA_8B).fused_lora


def test_a_smaller_gpu_recomputes_activations_at_16k() -> None:
    speed = resolve_speed(spec(), A100_40GB, LLAMA_8B)
    assert speed.tokens_per_step == 16384 and speed.gradient_checkpointing


def test_memory_estimate_matches_what_the_h200_showed() -> None:
    # Measured on an H200 (BENCHMARKS.md): 8,192 tokens without recomputation peaked at
    # 60.6 GiB; 16,384 did not fit without it.
    assert fits_without_checkpointing(LLAMA_8B, 8192, spec(), H200.memory_bytes)
    assert not fits_without_checkpointing(LLAMA_8B, 16384, spec(), H200.memory_bytes)
    assert 50 < estimate(LLAMA_8B, spec(), 8192, recompute=False).activations / GIB < 70


def test_long_examples_raise_the_budget_and_prompt_methods_keep_rows() -> None:
    assert resolve_speed(spec(training={"max_seq_length": 16384}), H200, LLAMA_8B).tokens_per_step == 16384
    assert resolve_speed(spec(adapter={"type": "prompt_tuning"}), H200, LLAMA_8B).tokens_per_step is None
    assert not resolve_speed(spec(adapter={"type": "prefix_tuning"}), pick_runtime(), LLAMA_8B).gradient_checkpointing


def test_explicit_settings_win() -> None:
    chosen = {
        "tokens_per_step": 4096,
        "gradient_checkpointing": True,
        "liger_kernel": False,
        "optimizer": "paged_adamw_32bit",
        "attention": "sdpa",
        "upcast_unquantized": True,
        "fused_lora": False,
    }
    speed = resolve_speed(spec(performance=chosen), H200, LLAMA_8B)
    assert speed.describe() == chosen


@pytest.mark.parametrize(
    ("qlora", "words"),
    [
        ({"performance": {"tokens_per_step": 1024}}, "at least max_seq_length"),
        ({"adapter": {"type": "adalora"}, "performance": {"tokens_per_step": 4096}}, "token-budget"),
        ({"adapter": {"type": "prefix_tuning"}, "performance": {"gradient_checkpointing": True}}, "checkpointing"),
    ],
)
def test_settings_that_cannot_apply_are_refused(qlora: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        spec(**qlora)


def test_dpo_trains_padded_batches_of_pairs_without_liger() -> None:
    asked = JobSpec.model_validate(
        {"model": "m", "training_file": "f", "method": {"type": "dpo"}, "qlora": {"training": {"max_seq_length": 512}}}
    )
    dpo = resolve(asked, n_examples=1000, seed=0, data_format="preference")
    speed = resolve_speed(dpo, H200, LLAMA_8B)
    assert speed.tokens_per_step is None and not speed.liger_kernel and speed.attention == "sdpa"
    # 16 pairs of 512 tokens are 32 sequences, 16,384 tokens: more than an H200 holds
    # without recomputation (8,192 would fit).
    assert dpo.hparams.batch_size == 16 and speed.gradient_checkpointing
