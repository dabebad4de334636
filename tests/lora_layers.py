"""Two peft LoRA layers on bitsandbytes 4-bit bases, trained one step with peft's own
forward and with worker.training.fused_lora's: what the CPU and GPU tests compare."""

from __future__ import annotations

import bitsandbytes as bnb
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn


class TwoLayers(nn.Module):
    def __init__(self, dtype: torch.dtype, bias: bool) -> None:
        super().__init__()
        self.up = bnb.nn.Linear4bit(256, 512, bias=False, compute_dtype=dtype, quant_type="nf4")
        self.down = bnb.nn.Linear4bit(512, 256, bias=bias, compute_dtype=dtype, quant_type="nf4")
        self.is_loaded_in_4bit = True  # what peft looks for to wrap bitsandbytes layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.up(x)))


def lora_model(device: str, dtype: torch.dtype, dropout: float, seed: int, bias: bool = False) -> PeftModel:
    torch.manual_seed(seed)
    model = TwoLayers(dtype, bias)
    for layer in (model.up, model.down):
        weight = torch.randn(layer.out_features, layer.in_features) / layer.in_features**0.5
        layer.weight = bnb.nn.Params4bit(
            weight.to(dtype), requires_grad=False, quant_type="nf4", compress_statistics=True
        )
        if layer.bias is not None:
            layer.bias = nn.Parameter(torch.randn(layer.out_features, dtype=dtype), requires_grad=False)
    model = model.to(device)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["up", "down"])
    )
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: the adapter's path would carry nothing
            nn.init.normal_(parameter, std=0.05)
    return peft_model.train()


def one_step(
    model: PeftModel, x: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The output, the input's gradient and the adapter's gradients of one step."""
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)  # the same dropout masks for both paths
    out = model(x)
    out.float().square().mean().backward()
    assert x.grad is not None
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return out.detach(), x.grad, grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())
