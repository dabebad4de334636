"""GPU-aware routing with real worker processes, Postgres and Redis: workers advertise
their devices (GPU inventories set by FTSVC_WORKER_DEVICES, so this CPU machine can
have them) and stop being live; jobs go to the queue of their memory class, are refused
when no live worker can run them (at creation, or at pre-flight), wait when no worker
is live at all, and never share a GPU.

The module runs on a training queue of its own ("rt", its pre-flight on "rt-preflight"):
the API in this process and every worker it starts use them, so the session's workers
neither count as live here nor take these jobs."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from core import worker_registry
from core.db import session_scope
from core.settings import get_settings
from tests.conftest import BROKER_URL, TEST_ORG, Workers, make_client
from tests.helpers import EXAMPLES, all_events, assert_error, upload_ok, wait_for
from worker import model_shapes

QUEUES = {"training_queue": "rt", "preflight_queue": "rt-preflight"}
# Workers renew their row every half second; one silent for 3 s is not live.
LIVENESS = {"FTSVC_WORKER_HEARTBEAT_SECONDS": "0.5", "FTSVC_WORKER_LIVENESS_SECONDS": "3"}
WORKER_ENV = {"FTSVC_TRAINING_QUEUE": "rt", "FTSVC_PREFLIGHT_QUEUE": "rt-preflight", **LIVENESS}


def gpus(count: int, gib: float, name: str = "Fake GPU") -> dict[str, str]:
    return {"FTSVC_WORKER_DEVICES": json.dumps([{"name": name, "memory_gib": gib}] * count)}


@pytest.fixture(scope="module")
def workers(tiny_model: Path) -> Iterator[Workers]:
    """This module's settings in this process (its queues, a 3 s liveness), and its workers:
    a pre-flight worker on its queues from the start, training workers as tests start them."""
    settings = get_settings()
    saved = {name: getattr(settings, name) for name in [*QUEUES, "worker_liveness_seconds"]}
    for name, value in (QUEUES | {"worker_liveness_seconds": 3.0}).items():
        setattr(settings, name, value)
    started = Workers()
    started.start(["rt-preflight"], **WORKER_ENV)
    yield started
    for name in list(started.processes):
        started.stop(name)
    for name, value in saved.items():
        setattr(settings, name, value)


@pytest.fixture(scope="module")
def client(workers: Workers, api_keys: dict[str, str]) -> Iterator[TestClient]:
    with make_client(api_keys[TEST_ORG]) as client:
        yield client


@pytest.fixture(scope="module")
def chat_file(client: TestClient) -> str:
    return upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")


@pytest.fixture(scope="module")
def big_model(tiny_model: Path) -> Iterator[str]:
    """A local model with the Llama-3-8B shape in its config.json and the tiny model's
    tokenizer (and weights, which no test here loads): what the API and the pre-flight
    estimate from."""
    target = tiny_model.parent / "llama-8b-shape"
    shutil.copytree(tiny_model, target)
    config = json.loads((target / "config.json").read_text()) | model_shapes.LLAMA_8B | {"head_dim": 128}
    (target / "config.json").write_text(json.dumps(config))
    yield target.name
    shutil.rmtree(target)


@pytest.fixture
def training(workers: Workers) -> Iterator[Workers]:
    """Training workers a test starts; each stopped (and so withdrawn) at its end."""
    started = Workers()
    yield started
    for name in list(started.processes):
        started.stop(name)


def live() -> dict[str, worker_registry.LiveWorker]:
    with session_scope() as session:
        return {w.name: w for w in worker_registry.live_workers(session)}


def until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def create(client: TestClient, model: str, training_file: str, **qlora: Any) -> Any:
    body = {"model": model, "training_file": training_file, "qlora": qlora}
    return client.post("/v1/fine_tuning/jobs", json=body)


def test_workers_advertise_their_devices_and_stop_being_live(training: Workers) -> None:
    gpu = training.start(**WORKER_ENV, **gpus(2, 23.5, "NVIDIA RTX 4090"))
    cpu = training.start(**WORKER_ENV, FTSVC_WORKER_DEVICES="[]")
    found = live()
    assert [d.name for d in found[gpu].inventory.gpus] == ["NVIDIA RTX 4090"] * 2
    assert found[gpu].inventory.gpu_memory_bytes == int(23.5 * 2**30)
    assert found[cpu].inventory.gpus == () and found[cpu].inventory.host_memory_bytes > 2**30
    # The classes each serves, and Celery really consumes them.
    assert found[cpu].queues == ("rt",)
    classes = [f"rt.{n}x{m}gib" for n in (1, 2) for m in (14, 22, 23)]  # 23.5 GiB: classes up to 23
    assert found[gpu].queues == ("rt", *classes)
    from core.queue import get_celery

    active = get_celery().control.inspect(destination=[gpu], timeout=5).active_queues() or {}
    assert {q["name"] for q in active[gpu]} == set(found[gpu].queues)
    # Its heartbeat renews its row.
    first = found[gpu].heartbeat_at
    until(lambda: live()[gpu].heartbeat_at > first + 0.9)
    # Killed, it stops being live after the liveness timeout; stopped, at once.
    training.kill(gpu)
    assert gpu in live()
    until(lambda: gpu not in live(), timeout=10)
    training.stop(cpu)
    assert cpu not in live()


def test_with_no_live_worker_a_job_waits_in_its_class_queue(client: TestClient, chat_file: str, big_model: str) -> None:
    assert not live()
    response = create(client, big_model, chat_file)
    assert response.status_code == 200, response.text  # not refused
    job = wait_for(client, response.json()["id"], {"queued"})
    events = all_events(client, job["id"])
    routed = next(e for e in events if e["message"].startswith("Routed to queue"))
    # 8B, recomputation on (auto), 16,384-token rows: 16.0 GiB, the 22 GiB class.
    assert routed["message"].startswith("Routed to queue rt.1x22gib: 1 GPU(s), each with an estimated 16.0 GiB")
    assert routed["data"]["queue"] == "rt.1x22gib" and routed["data"]["estimate"]["recompute"] is True
    assert any(e["message"].startswith("No training worker is live right now") for e in events)
    # Its message is in that queue, waiting for a worker.
    with redis.Redis.from_url(BROKER_URL) as broker:
        bodies = [json.loads(m) for m in broker.lrange("rt.1x22gib", 0, -1)]
    assert any(b["headers"]["task"] == "ftsvc.run_job" and job["id"] in b["headers"]["argsrepr"] for b in bodies)
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")


def test_a_job_no_live_worker_can_run_is_refused_at_creation_with_the_figures(
    client: TestClient, chat_file: str, big_model: str, training: Workers
) -> None:
    training.start(**WORKER_ENV, FTSVC_WORKER_DEVICES="[]")
    error = assert_error(create(client, big_model, chat_file), 400, param="model", code="insufficient_gpu_memory")
    assert "needs 1 GPU(s), each with an estimated 16.0 GiB" in error["message"]
    assert "the live workers have no GPU" in error["message"]
    gpu = training.start(**WORKER_ENV, **gpus(2, 23.5, "NVIDIA RTX 4090"))
    # Fits with recomputation (auto), not without it: 66.2 GiB against 23.5.
    no_recompute = {"performance": {"gradient_checkpointing": False}}
    error = assert_error(create(client, big_model, chat_file, **no_recompute), 400, code="insufficient_gpu_memory")
    assert "an estimated 66.2 GiB: weights 5.3, adapter and optimizer 0.6, activations 58.3" in error["message"]
    assert f"the largest a live worker has is 23.5 GiB per GPU (NVIDIA RTX 4090, 2 GPU(s) on {gpu})" in error["message"]
    assert error["estimate"]["total_bytes"] > 66 * 2**30 and error["largest_gpu_memory_bytes"] == int(23.5 * 2**30)
    error = assert_error(
        create(client, big_model, chat_file, resources={"gpus": 4}), 400, "qlora.resources.gpus", "not_enough_gpus"
    )
    assert f"the most is 2 on {gpu}" in error["message"]
    assert_error(create(client, big_model, chat_file, resources={"gpus": 9}), 400, "qlora.resources.gpus")
    # What fits is accepted, placed in a class the live worker serves (and cancelled at
    # once: its weights are the tiny model's, no worker should load them).
    response = create(client, big_model, chat_file)
    assert response.status_code == 200, response.text
    client.post(f"/v1/fine_tuning/jobs/{response.json()['id']}/cancel")
    assert placement(response.json()["id"])["queue"] == "rt.1x22gib"


def placement(job_id: str) -> dict[str, Any]:
    from sqlalchemy import select

    from core.models import Job

    with session_scope() as session:
        found = session.scalar(select(Job.placement).where(Job.id == job_id))
    assert found is not None
    return found


def test_a_job_that_became_unservable_fails_its_pre_flight(
    client: TestClient, chat_file: str, big_model: str, training: Workers
) -> None:
    from core.job_creation import create_job
    from core.jobs import publish
    from core.specs import JobSpec
    from core.states import JobStatus

    assert not live()
    with session_scope() as session:  # created while no worker is live: not refused
        spec = {"model": big_model, "training_file": chat_file, "qlora": {"training": {"max_seq_length": 32768}}}
        job_id = create_job(session, TEST_ORG, JobSpec.model_validate(spec)).id
    training.start(**WORKER_ENV, **gpus(1, 23.5))
    publish(job_id, JobStatus.VALIDATING_FILES)
    job = wait_for(client, job_id, {"failed"})
    assert job["error"]["code"] == "insufficient_gpu_memory" and job["error"]["param"] == "model"
    assert "32,768 tokens per step with recomputation" in job["error"]["message"]
    assert "the largest a live worker has is 23.5 GiB per GPU" in job["error"]["message"]


def test_jobs_never_share_a_gpu_and_each_gets_its_own(client: TestClient, chat_file: str, training: Workers) -> None:
    """A worker with two (configured) GPUs runs three tiny jobs: each job process is given
    one GPU of its own through CUDA_VISIBLE_DEVICES (the jobs train on the CPU here), and
    no two runs hold the same GPU at once."""
    from core import leases

    training.start(**WORKER_ENV, **gpus(2, 23.5))
    steps = {"training": {"max_steps": 2, "learning_rate": 0.01}}
    ids = [create(client, "tiny-llama", chat_file, **steps).json()["id"] for _ in range(3)]
    for job_id in ids:
        assert placement(job_id)["queue"] == "rt"  # tiny: the training queue itself
        wait_for(client, job_id, {"succeeded"}, timeout=600)
    runs: dict[str, list[tuple[float, float]]] = {}
    for job_id in ids:
        started = next(e for e in all_events(client, job_id) if e["message"].startswith("Job process "))
        gpu = started["data"]["cuda_visible_devices"]
        assert f"with GPU(s) {gpu};" in started["message"]
        with session_scope() as session:
            (attempt,) = leases.attempts_of(session, job_id)
            assert attempt.ended_at is not None
            runs.setdefault(gpu, []).append((attempt.started_at, attempt.ended_at))
    assert set(runs) == {"0", "1"}  # both GPUs used, one each per job
    for intervals in runs.values():
        intervals.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(intervals, intervals[1:], strict=False))
