"""A multi-GPU job's training processes as the recipe sees them: one process (rank) per
GPU of one host in a torch.distributed process group, which transformers' Trainer then
trains with DDP (each rank its own share of every batch, gradients averaged). Rank 0
reports for all; what decides whether and when the run stops or saves is rank 0's
decision, handed to every rank, so that no rank waits in a collective the others left.

A single-GPU job has no process group: every function here then is what one process
alone would do."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# How long a rank waits for the others in a collective: rank 0 may download the base
# model or upload a checkpoint while the others wait in the next step's all-reduce. A
# rank that died is noticed by the job process at once (worker.ranks), not by this.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


def join() -> None:
    """Join the job's process group, from torchrun's environment (RANK, LOCAL_RANK,
    WORLD_SIZE, MASTER_ADDR, MASTER_PORT): NCCL between GPUs, where rank r trains on the
    r-th visible GPU; gloo between CPU ranks."""
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device, timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process reports, checkpoints and publishes (rank 0)."""
    return rank() == 0


def from_main(value: T) -> T:
    """Rank 0's `value`, on every rank (each must call this at the same point)."""
    if not dist.is_initialized():
        return value
    shared = [value]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def from_every_rank(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    gathered: list[T | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered  # type: ignore[return-value]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def accumulation_per_rank(steps: int) -> int:
    """Gradient accumulation steps of each rank for an optimizer step of `steps` micro-
    batches: the ranks share them, so a step trains on the same effective batch as on
    one GPU (when `steps` divides by the number of ranks; else the nearest, at least 1)."""
    return max(1, round(steps / world_size()))
