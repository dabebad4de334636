"""A random-weight Llama written directly in 4 bits (NF4, double quantization), in the
pre-quantized layout transformers loads (`quantization_config` in config.json, each
linear layer's packed weight and quantization state in the safetensors).

Why: a 70B-shaped model is 140 GB in bf16, more than the GPU machine's 64 GB disk; in 4
bits it is about 40 GB. No bf16 copy of the whole model ever exists: each linear
layer's weight is drawn on the device and quantized at once. It is the format the
workers' base cache keeps (worker/training/base_cache.py): `save_pretrained` of a
model loaded in 4 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def build_four_bit(config: Any, target: Path, device: str) -> None:
    """Write the model of `config` (a LlamaConfig) in 4 bits to `target`, with random
    weights (std 0.02, norms 1) drawn on `device`."""
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig, LlamaForCausalLM
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quantization)
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = torch.empty(module.out_features, module.in_features, device=device, dtype=torch.bfloat16)
            module.weight = bnb.nn.Params4bit(
                weight.normal_(0, 0.02), requires_grad=False, quant_type="nf4", compress_statistics=True
            ).to(device)  # quantizes it
            continue
        for name, parameter in list(module.named_parameters(recurse=False)):
            value = torch.empty(parameter.shape, device=device, dtype=torch.bfloat16)
            value = value.fill_(1.0) if "norm" in type(module).__name__.lower() else value.normal_(0, 0.02)
            setattr(module, name, nn.Parameter(value, requires_grad=False))
    model.config.quantization_config = quantization
    model.save_pretrained(target, max_shard_size="5GB")
