"""Which Celery queue a job's training goes to, so that only a worker able to run it
takes it.

Queues are memory classes: `<training queue>.<N>x<M>gib` holds jobs that need N GPUs of
at least M GiB each (M one of FTSVC_GPU_MEMORY_CLASSES_GIB). A job goes to the smallest
class that holds its memory estimate (core.memory_estimate) on its number of GPUs; a
worker with K GPUs of G GiB consumes every class with N <= K and M <= G, so any worker
that takes a message can run its job, and a job is never tied to one worker (another
of its class takes it if that one dies). Tiny jobs (their estimate, besides the CUDA
overhead, at most FTSVC_TINY_JOB_GIB) and jobs whose model is not a Llama-like decoder
stay on the training queue itself, which every training worker consumes, CPU workers
(the embedded mode, the tests) included; so do merges.

A job that no live worker can serve is refused at creation (400) or fails its
pre-flight, saying its estimate and the largest GPU a live worker has. When no worker
is live at all the job is not refused (workers restart): it waits in its queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequest
from core.memory_estimate import GIB, MemoryEstimate, ModelShape, UnknownShape, least_memory
from core.settings import get_settings
from core.specs import ResolvedSpec
from core.worker_registry import Inventory, LiveWorker


def estimate_job(config: dict[str, Any] | None, spec: ResolvedSpec) -> MemoryEstimate | None:
    """The least memory the job needs per GPU, from its base model's config.json; None
    when the model is not a Llama-like decoder (or its config is unknown)."""
    if config is None:
        return None
    try:
        return least_memory(ModelShape.from_config(config), spec)
    except UnknownShape:
        return None


def class_queue(gpus: int, memory_class_gib: int) -> str:
    return f"{get_settings().training_queue}.{gpus}x{memory_class_gib}gib"


def queues_served(inventory: Inventory) -> list[str]:
    """The queues a training worker with this inventory consumes: the training queue,
    and the classes its GPUs hold (none on a CPU worker)."""
    settings = get_settings()
    fitting = [c for c in settings.gpu_memory_classes_gib if c * GIB <= inventory.gpu_memory_bytes]
    gpus = range(1, len(inventory.gpus) + 1)
    return [settings.training_queue, *(class_queue(n, c) for n in gpus for c in fitting)]


@dataclass(frozen=True)
class Placement:
    """Where a job goes: its queue, its GPUs and the estimate that chose them."""

    queue: str
    gpus: int
    estimate: MemoryEstimate | None

    def as_json(self) -> dict[str, Any]:
        estimate = self.estimate.figures() if self.estimate else None
        return {"queue": self.queue, "gpus": self.gpus, "estimate": estimate}

    def describe(self) -> str:
        need = f"an estimated {self.estimate.describe()}" if self.estimate else "an unknown amount of memory"
        return f"{self.gpus} GPU(s), each with {need}"


def place(estimate: MemoryEstimate | None, gpus: int) -> Placement | None:
    """The job's queue; None when its estimate exceeds the largest memory class (no
    worker could ever serve it)."""
    settings = get_settings()
    if estimate is None or (gpus == 1 and estimate.total - estimate.overhead <= settings.tiny_job_gib * GIB):
        return Placement(settings.training_queue, gpus, estimate)
    fitting = [c for c in sorted(settings.gpu_memory_classes_gib) if estimate.total <= c * GIB]
    return Placement(class_queue(gpus, fitting[0]), gpus, estimate) if fitting else None


def _largest(workers: Sequence[LiveWorker]) -> str:
    best = max(workers, key=lambda w: (w.inventory.gpu_memory_bytes, len(w.inventory.gpus)))
    inventory = best.inventory
    if not inventory.gpus:
        return f"the live workers have no GPU (CPU workers, {inventory.host_memory_bytes / GIB:.1f} GiB of RAM)"
    return (
        f"the largest a live worker has is {inventory.gpu_memory_bytes / GIB:.1f} GiB per GPU "
        f"({inventory.gpus[0].name}, {len(inventory.gpus)} GPU(s) on {best.name})"
    )


def check_servable(estimate: MemoryEstimate | None, gpus: int, live: Sequence[LiveWorker]) -> Placement:
    """The job's placement, or an InvalidRequest that says why no live worker can run
    it. With no live worker at all nothing is refused (but an estimate beyond every
    memory class)."""
    placement = place(estimate, gpus)
    figures = {"estimate": estimate.figures() if estimate else None, "gpus": gpus}
    if placement is None:
        assert estimate is not None, "a job without an estimate always has a queue"
        classes = max(get_settings().gpu_memory_classes_gib)
        raise InvalidRequest(
            f"This job needs an estimated {estimate.describe()} on each GPU, more than the largest GPU memory "
            f"class ({classes} GiB, FTSVC_GPU_MEMORY_CLASSES_GIB); turn on qlora.performance.gradient_checkpointing "
            "or lower qlora.performance.tokens_per_step, the batch size or qlora.training.max_seq_length",
            param="model",
            code="insufficient_gpu_memory",
            extra=figures,
        )
    if not live or any(placement.queue in w.queues for w in live):
        return placement
    figures |= {
        "largest_gpu_memory_bytes": max(w.inventory.gpu_memory_bytes for w in live),
        "most_gpus": max(len(w.inventory.gpus) for w in live),
    }
    most = max(live, key=lambda w: len(w.inventory.gpus))
    if 0 < len(most.inventory.gpus) < gpus:  # (with no GPU at all, the memory is what to say)
        raise InvalidRequest(
            f"This job asks for {gpus} GPUs (qlora.resources.gpus), but no live worker has that many: the most "
            f"is {len(most.inventory.gpus)} on {most.name}",
            param="qlora.resources.gpus",
            code="not_enough_gpus",
            extra=figures,
        )
    raise InvalidRequest(
        f"No live worker can run this job: it needs {placement.describe()}, and {_largest(live)}. Turn on "
        "qlora.performance.gradient_checkpointing, lower qlora.performance.tokens_per_step, the batch size or "
        "qlora.training.max_seq_length, or start a worker with more GPU memory",
        param="model",
        code="insufficient_gpu_memory",
        extra=figures,
    )


NO_LIVE_WORKER = (
    "No training worker is live right now: the job waits in queue {queue} for one that can serve "
    "{need} (workers advertise themselves when they start)"
)
