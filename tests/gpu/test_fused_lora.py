"""worker.training.fused_lora on a CUDA GPU as jobs train (bf16 autocast, the adapter's
weights in fp32): the same outputs and gradients as peft's own LoRA forward, with the
same dropout masks, within bf16 rounding."""

from __future__ import annotations

import pytest
import torch

from tests.lora_layers import lora_model, one_step, relative_error
from worker.training.fused_lora import fuse

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dropout", [0.0, 0.05])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_equals_peft_under_bf16_autocast(dropout: float, bias: bool) -> None:
    x = torch.randn(1, 4096, 256, dtype=torch.bfloat16, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        plain = one_step(lora_model("cuda", torch.bfloat16, dropout, seed=11, bias=bias), x, seed=12)
        fused_model = lora_model("cuda", torch.bfloat16, dropout, seed=11, bias=bias)
        assert fuse(fused_model) == 2
        fused = one_step(fused_model, x, seed=12)
    assert all(g.dtype == torch.float32 for g in fused[2].values())
    assert relative_error(fused[0], plain[0]) < 5e-3
    assert relative_error(fused[1], plain[1]) < 1e-2
    for name in plain[2]:
        assert relative_error(fused[2][name], plain[2][name]) < 1e-2, name


def test_without_autocast_peft_computes_the_adapter_in_fp32() -> None:
    """Outside autocast peft casts the input up to the adapter's fp32: the fused layer
    leaves that to peft, so the results are peft's exactly."""
    x = torch.randn(1, 512, 256, dtype=torch.bfloat16, device="cuda")
    plain = one_step(lora_model("cuda", torch.bfloat16, 0.05, seed=21), x, seed=22)
    fused_model = lora_model("cuda", torch.bfloat16, 0.05, seed=21)
    fuse(fused_model)
    fused = one_step(fused_model, x, seed=22)
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
