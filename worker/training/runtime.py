"""Where a job runs: device and compute dtype, resolved from the spec's "auto"."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from transformers import BitsAndBytesConfig

from core.specs import Quantization
from worker.training import distributed

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def four_bit_config(quantization: Quantization | None, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    """How training loads a base: in 4 bits as the spec quantizes it, computing in
    `compute_dtype` (None: unquantized). Inference, evaluation and the QLoRA merge load it
    the same way, so that an adapter meets the weights it was trained against."""
    if quantization is None:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


@dataclass(frozen=True)
class Runtime:
    device: str
    device_name: str
    compute_dtype: str
    memory_bytes: int  # of the GPU, or of the host on CPU
    # The job's ranks (worker.training.distributed): one process per GPU, each a Runtime.
    world_size: int = 1

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.compute_dtype]

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> dict[str, str]:
        import bitsandbytes
        import peft
        import transformers
        import trl

        versions = {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
            "bitsandbytes": bitsandbytes.__version__,
        }
        return {**asdict(self), **versions}


def pick_runtime(compute_dtype: str = "auto") -> Runtime:
    """bf16 compute on GPUs that have it (the QLoRA recipe), fp16 on older GPUs, and
    float32 on CPU, where bf16 matmuls are slow on most processors."""
    ranks = distributed.world_size()
    if torch.cuda.is_available():
        index = torch.cuda.current_device()  # a rank's own GPU (distributed.join)
        auto = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return Runtime(
            f"cuda:{index}",
            torch.cuda.get_device_name(index),
            auto if compute_dtype == "auto" else compute_dtype,
            torch.cuda.get_device_properties(index).total_memory,
            ranks,
        )
    host_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Runtime("cpu", "cpu", "float32" if compute_dtype == "auto" else compute_dtype, host_memory, ranks)
