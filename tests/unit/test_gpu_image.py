"""The GPU worker image, as far as a machine without Docker can check it: the command it
runs, the packages it installs, the environment it expects."""

from __future__ import annotations

import re

from ftsvc.cli import worker_command
from tests.helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
COMPOSE = (ROOT / "docker-compose.yml").read_text()


def test_the_image_runs_a_celery_worker_on_the_training_queue() -> None:
    assert 'ENTRYPOINT ["ftsvc"]' in DOCKERFILE and 'CMD ["worker"]' in DOCKERFILE
    command = worker_command()
    assert command[1:6] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert command[command.index("-Q") + 1] == "training"
    assert command[command.index("--max-tasks-per-child") + 1] == "1"  # GPU memory returned after each job


def test_the_image_installs_cuda_torch_the_locked_stack_and_liger() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    torch_pin = re.search(r"^torch==([\d.]+)", lock, re.M).group(1)  # type: ignore[union-attr]
    assert f"torch=={torch_pin} --index-url https://download.pytorch.org/whl/cu" in DOCKERFILE
    assert "bitsandbytes==0.50.2" in lock and "grep -v '^torch=='" in DOCKERFILE
    assert "liger-kernel==" in DOCKERFILE
    assert DOCKERFILE.startswith("# GPU training worker") and "FROM nvidia/cuda:" in DOCKERFILE


def test_compose_gives_workers_a_gpu_postgres_and_redis() -> None:
    worker = COMPOSE.split("  worker:")[1]
    assert 'command: ["worker"]' in worker and "capabilities: [gpu]" in worker
    assert "FTSVC_DATABASE_URL: postgresql+psycopg://" in COMPOSE and "FTSVC_BROKER_URL: redis://" in COMPOSE
