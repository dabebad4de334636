"""LoRA on a 4-bit layer through worker.training.fused_lora computes what peft computes:
the same outputs and gradients, with the same dropout masks (on the CPU, in float32,
exactly the same), and falls back to peft where it does not apply."""

from __future__ import annotations

import pytest
import torch

from tests.lora_layers import lora_model, one_step, relative_error
from worker.training.fused_lora import fuse


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_equals_peft_in_float32(dropout: float, bias: bool) -> None:
    x = torch.randn(2, 24, 256)
    plain = one_step(lora_model("cpu", torch.float32, dropout, seed=3, bias=bias), x, seed=9)
    fused_model = lora_model("cpu", torch.float32, dropout, seed=3, bias=bias)
    assert fuse(fused_model) == 2
    fused = one_step(fused_model, x, seed=9)
    assert relative_error(fused[0], plain[0]) < 1e-6
    assert relative_error(fused[1], plain[1]) < 1e-6
    assert plain[2].keys() == fused[2].keys() and len(plain[2]) == 4
    for name in plain[2]:
        assert relative_error(fused[2][name], plain[2][name]) < 1e-6, name


def test_fused_is_close_to_peft_in_bfloat16() -> None:
    x = torch.randn(1, 32, 256, dtype=torch.bfloat16)
    plain = one_step(lora_model("cpu", torch.bfloat16, 0.05, seed=4), x, seed=5)
    fused_model = lora_model("cpu", torch.bfloat16, 0.05, seed=4)
    fuse(fused_model)
    fused = one_step(fused_model, x, seed=5)
    assert relative_error(fused[0], plain[0]) < 1e-2 and relative_error(fused[1], plain[1]) < 2e-2
    for name in plain[2]:
        assert relative_error(fused[2][name], plain[2][name]) < 2e-2, name


def test_a_disabled_adapter_and_eval_mode_take_the_plain_paths() -> None:
    x = torch.randn(1, 8, 256)
    model = lora_model("cpu", torch.float32, 0.1, seed=1)
    fuse(model)
    with torch.no_grad():
        with model.disable_adapter():
            base_only = model(x)
        model.eval()
        adapted = model(x)
    reference = lora_model("cpu", torch.float32, 0.1, seed=1)
    with torch.no_grad():
        with reference.disable_adapter():
            assert torch.equal(base_only, reference(x))
        reference.eval()
        # (on a CPU, bitsandbytes' inference kernel may round differently)
        assert relative_error(adapted, reference(x)) < 1e-2
    assert not torch.equal(base_only, adapted)


def test_fusing_twice_wraps_each_layer_once() -> None:
    model = lora_model("cpu", torch.float32, 0.0, seed=2)
    assert fuse(model) == 2 and fuse(model) == 0
