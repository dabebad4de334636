"""Variable-length attention for packed rows, through PyTorch's own FlashAttention
kernels (`torch.nn.attention.varlen`), registered with transformers' AttentionInterface.

Why: a packed row reaches SDPA as one long sequence with a block-diagonal mask, which
rules out the flash kernel and computes attention across the whole row (most of it
masked). The varlen kernel takes the examples' boundaries (`cu_seq_lens_*`, which TRL's
padding-free collator already passes to the model) and attends within each example
only. Batches without those boundaries (padded ones) use SDPA as before.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

NAME = "torch_varlen"


def available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def _varlen_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or query.shape[0] != 1 or dropout:
        if attention_mask is not None:  # the mask built for this implementation is FlashAttention's 2D one
            raise ValueError(f"{NAME} attention serves packed rows and unpadded sequences, not padded batches")
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, dropout=dropout, **kwargs)
    from torch.nn.attention.varlen import varlen_attn

    # QLoRA keeps norms (and so the projections' inputs) in fp32; autocast would run SDPA
    # in the compute dtype, and FlashAttention needs it explicitly.
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
    # (1, heads, tokens, dim) -> (tokens, heads, dim)
    q, k, v = (t[0].transpose(0, 1).to(dtype) for t in (query, key, value))
    options: dict[str, Any] = {"scale": scaling}
    parameters = inspect.signature(varlen_attn).parameters
    if "window_size" in parameters:
        options["window_size"] = (-1, 0)  # causal
    else:
        options["is_causal"] = True
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        if "enable_gqa" in parameters:
            options["enable_gqa"] = True
        else:
            repeat = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    out = varlen_attn(
        q,
        k,
        v,
        cu_q.to(torch.int32),
        cu_k.to(torch.int32),
        int(kwargs["max_length_q"]),
        int(kwargs["max_length_k"]),
        **options,
    )
    if isinstance(out, tuple):  # (output, auxiliaries) only when return_aux asks for them
        out = out[0]
    return out.unsqueeze(0).to(query.dtype), None  # (1, tokens, heads, dim), as transformers expects


def register() -> str:
    """Make `attn_implementation="torch_varlen"` loadable; returns the name."""
    AttentionInterface.register(NAME, _varlen_forward)
    # Packed rows need no mask (the boundaries travel separately); padded ones get the 2D one.
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    return NAME
