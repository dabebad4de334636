"""LoRA on a 4-bit base layer in one autograd function instead of peft's chain of ops.

Why: peft computes `base(x).clone() + lora_B(lora_A(dropout(x))) * scaling` as six
separate operations, each a full pass over the layer's input or output activations
(a copy of the base output, the scaling multiply, the add; in the backward pass the
same again plus the add that joins the two input gradients). For a row of 8,192 tokens
through an 8B model that is hundreds of gigabytes of memory traffic per step around
matmuls that are otherwise the whole cost (BENCHMARKS.md, "Where the time goes").

Here the base output is computed once and the adapter's contribution is added into it
by the matmul itself (`addmm_` with alpha = scaling: cuBLAS's epilogue does the scaling
and the add); the backward pass adds the adapter's input gradient into the base's the
same way. What is computed is the same function, with the same dropout masks (the
same RNG calls in the same order as peft) and the same saved tensors (the dropped-out
input and its mask, the rank-r projection), so memory does not grow.

The fused forward applies to peft's `lora.bnb.Linear4bit` layers training one plain
LoRA adapter; anything else (a merged or disabled adapter, several active adapters,
DoRA and other variants, mixed-adapter batches) goes through peft's own forward.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from bitsandbytes.functional import QuantState, dequantize_4bit
from torch import nn
from torch.nn import functional as F


class LoraOn4Bit(torch.autograd.Function):
    """y = x W^T + b + scaling * dropout(x) A^T B^T, W the dequantized 4-bit weight."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        packed: torch.Tensor,
        quant_state: QuantState,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        dropout: float,
    ) -> torch.Tensor:
        dtype = x.dtype
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        y = F.linear(x, dequantize_4bit(packed, quant_state).to(dtype), bias)
        if dropout:
            # native_dropout is what F.dropout runs (the same random numbers), and it
            # returns the mask the backward pass needs.
            dropped, mask = torch.native_dropout(x, dropout, True)
        else:
            dropped, mask = x, None
        rows = dropped.reshape(-1, x.shape[-1])
        projected = rows @ a.t()  # (tokens, r)
        y.view(-1, y.shape[-1]).addmm_(projected, b.t(), alpha=scaling)
        ctx.save_for_backward(packed, rows, mask, projected, a, b)
        ctx.quant_state, ctx.scaling, ctx.dropout = quant_state, scaling, dropout
        ctx.dtypes = (lora_a.dtype, lora_b.dtype)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        packed, rows, mask, projected, a, b = ctx.saved_tensors
        scaling: float = ctx.scaling
        dtype_a, dtype_b = ctx.dtypes
        grad_rows = grad.reshape(-1, grad.shape[-1]).to(rows.dtype)
        grad_projected = grad_rows @ (b * scaling)  # (tokens, r)
        grad_a = (grad_projected.t() @ rows).to(dtype_a)
        grad_b = (grad_rows.t() @ projected).mul_(scaling).to(dtype_b)
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            weight = dequantize_4bit(packed, ctx.quant_state).to(rows.dtype)
            grad_x = grad_rows @ weight
            if mask is None:
                grad_x.addmm_(grad_projected, a)
            else:
                lora_grad = (grad_projected @ a).view_as(mask)
                grad_x = grad_x.view_as(mask).addcmul_(lora_grad, mask, value=1 / (1 - ctx.dropout))
            grad_x = grad_x.view(grad.shape[:-1] + (rows.shape[-1],))
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_rows.sum(0)
        return grad_x, None, None, grad_bias, grad_a, grad_b, None, None


def _plain_adapter(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The one plain LoRA adapter this call trains, or None when peft's forward must run."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in layer.lora_variant:
        return None
    dropout = layer.lora_dropout[active[0]]
    if not isinstance(dropout, nn.Dropout | nn.Identity):
        return None
    return str(active[0])


def _applies(layer: Any, name: str, x: torch.Tensor) -> bool:
    """Whether this call computes what peft's forward would with adapter `name`."""
    quant_state = getattr(layer.base_layer.weight, "quant_state", None)
    if quant_state is None or x.dtype != quant_state.dtype:
        return False
    # (bitsandbytes repacks a CPU weight for its inference kernel, in a layout of its own.)
    if getattr(quant_state, "packing_format_for_cpu", False):
        return False
    # Outside autocast peft computes the adapter in its weights' dtype (fp32 by default),
    # casting the input up; only under autocast (how the Trainer runs bf16) is it the
    # input's dtype, as here.
    return torch.is_autocast_enabled(x.device.type) or layer.lora_A[name].weight.dtype == x.dtype


def _fused_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = _plain_adapter(layer, args, kwargs)
    out: torch.Tensor
    if name is None or not _applies(layer, name, x):
        out = layer._peft_forward(x, *args, **kwargs)
        return out
    base, dropout = layer.base_layer, layer.lora_dropout[name]
    p = dropout.p if isinstance(dropout, nn.Dropout) and layer.training else 0.0
    bias = base.bias.to(x.dtype) if base.bias is not None else None
    out = LoraOn4Bit.apply(
        x,
        base.weight.data,
        base.weight.quant_state,
        bias,
        layer.lora_A[name].weight,
        layer.lora_B[name].weight,
        float(layer.scaling[name]),
        p,
    )
    return out


def fuse(model: nn.Module) -> int:
    """Route every peft 4-bit LoRA layer of `model` through LoraOn4Bit (falling back to
    peft's forward per call where it does not apply); returns how many layers."""
    from peft.tuners.lora.bnb import Linear4bit

    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit) and not hasattr(module, "_peft_forward"):
            # On the instance: peft's class and every other layer stay as they are.
            module.__dict__["_peft_forward"] = module.forward
            module.__dict__["forward"] = types.MethodType(_fused_forward, module)
            count += 1
    return count
