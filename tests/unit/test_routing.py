"""Routing's pure part (core.routing): the queue of each estimate and GPU count, the
queues each inventory serves, and the refusals' wording with their figures."""

from __future__ import annotations

import pytest

from core.errors import InvalidRequest
from core.memory_estimate import GIB, ModelShape, least_memory
from core.routing import check_servable, place, queues_served
from core.specs import JobSpec, resolve
from core.worker_registry import Device, Inventory, LiveWorker
from worker import model_shapes

SPEC = resolve(JobSpec(model="m", training_file="f"), n_examples=100, seed=0, data_format="chat")
NO_RECOMPUTE = resolve(
    JobSpec.model_validate(
        {"model": "m", "training_file": "f", "qlora": {"performance": {"gradient_checkpointing": False}}}
    ),
    n_examples=100,
    seed=0,
    data_format="chat",
)
EIGHT_B = least_memory(ModelShape.from_config(model_shapes.LLAMA_8B), SPEC)  # 16.0 GiB
EIGHT_B_FAST = least_memory(ModelShape.from_config(model_shapes.LLAMA_8B), NO_RECOMPUTE)  # 66.2 GiB
TINY = least_memory(ModelShape.from_config(model_shapes.TINY | {"vocab_size": 512}), SPEC)


def worker(name: str, gpus: int, gib: float) -> LiveWorker:
    devices = tuple(Device(i, "NVIDIA L40S", int(gib * GIB)) for i in range(gpus))
    inventory = Inventory(devices, 64 * GIB)
    return LiveWorker(name, "host", tuple(queues_served(inventory)), inventory, 0.0)


def test_each_estimate_goes_to_the_smallest_class_that_holds_it() -> None:
    assert place(TINY, 1).queue == "training"  # tiny: any training worker, CPU ones included
    assert place(None, 1).queue == "training"  # no estimate (not a Llama-like model)
    assert place(EIGHT_B, 1).queue == "training.1x22gib"
    assert place(EIGHT_B_FAST, 2).queue == "training.2x79gib"
    assert place(TINY, 2).queue == "training.2x14gib"  # two GPUs are never a CPU job


def test_a_worker_serves_every_class_its_gpus_hold() -> None:
    cpu = queues_served(Inventory((), 64 * GIB))
    assert cpu == ["training"]
    h200s = queues_served(Inventory(tuple(Device(i, "NVIDIA H200", 150_109_880_320) for i in range(2)), 0))
    assert "training.2x139gib" in h200s and "training.1x14gib" in h200s and "training.1x178gib" not in h200s
    # Mixed GPUs: a job may get any of them, so the smallest decides.
    mixed = Inventory((Device(0, "A", 80 * GIB), Device(1, "B", 24 * GIB)), 0)
    assert "training.2x23gib" in queues_served(mixed) and "training.1x39gib" not in queues_served(mixed)


def test_no_live_worker_refuses_nothing_but_the_impossible() -> None:
    assert check_servable(EIGHT_B_FAST, 8, []).queue == "training.8x79gib"


def test_the_refusal_says_the_estimate_and_the_largest_gpu() -> None:
    live = [worker("small@a", 4, 44.4), worker("cpu@b", 0, 0)]
    assert check_servable(EIGHT_B, 1, live).queue == "training.1x22gib"
    with pytest.raises(InvalidRequest) as refused:
        check_servable(EIGHT_B_FAST, 1, live)
    error = refused.value
    assert error.code == "insufficient_gpu_memory" and error.param == "model"
    assert "66.2 GiB" in error.message and "44.4 GiB per GPU (NVIDIA L40S, 4 GPU(s) on small@a)" in error.message
    assert error.extra["largest_gpu_memory_bytes"] == int(44.4 * GIB)
    assert error.extra["estimate"]["total_bytes"] == EIGHT_B_FAST.total


def test_asking_for_more_gpus_than_any_live_worker_has_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_servable(EIGHT_B, 8, [worker("small@a", 4, 44.4)])
    assert refused.value.code == "not_enough_gpus" and refused.value.param == "qlora.resources.gpus"
    assert "8 GPUs" in refused.value.message and "the most is 4 on small@a" in refused.value.message


def test_an_estimate_beyond_every_memory_class_is_refused_even_with_no_live_worker() -> None:
    asked = {"performance": {"tokens_per_step": 65536, "gradient_checkpointing": False}}
    spec = resolve(
        JobSpec.model_validate({"model": "m", "training_file": "f", "qlora": asked}),
        n_examples=100,
        seed=0,
        data_format="chat",
    )
    huge = least_memory(ModelShape.from_config(model_shapes.LLAMA_8B), spec)
    assert place(huge, 1) is None
    with pytest.raises(InvalidRequest, match=r"more than the largest GPU memory class \(178 GiB"):
        check_servable(huge, 1, [])
