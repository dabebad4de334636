"""What only a CUDA GPU can run. On this CPU machine these are skipped; on a GPU machine
run `pytest tests/gpu` (BENCHMARKS.md has the H200 figures)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: FlashAttention varlen kernels do not exist on CPUs"
)


def test_varlen_attention_on_a_packed_row_equals_sdpa_per_example(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    from worker.training import attention

    name = attention.register()
    varlen = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16, attn_implementation=name).cuda()
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
    lengths = [7, 30, 12]
    examples = [torch.randint(10, varlen.config.vocab_size, (n,), device="cuda") for n in lengths]
    row = torch.cat(examples)[None]
    positions = torch.cat([torch.arange(n, device="cuda") for n in lengths])[None]
    cu = torch.tensor([0, 7, 37, 49], device="cuda", dtype=torch.int32)
    with torch.no_grad():
        packed = varlen(
            input_ids=row, position_ids=positions, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=30, max_length_k=30
        ).logits[0]
        separate = torch.cat([sdpa(input_ids=e[None]).logits[0] for e in examples])
    assert (packed.float() - separate.float()).abs().max() < 0.05
