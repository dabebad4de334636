"""The images, as far as a machine without Docker can check them: the GPU worker image
and the slim one of the API and pre-flight workers; the commands they run, the packages
they install, the environment they expect; and the four lock layers they install from
(runtime, preflight, worker; dev only for development)."""

from __future__ import annotations

import re
import tomllib

import yaml

from ftsvc.cli import worker_command
from tests.helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile.gpu").read_text()
SLIM_DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
LOCKS = ROOT / "requirements"
LAYERS = ("runtime", "preflight", "worker", "dev")
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;]+)\s*(;.*)?$")
DEV_TOOLS = {"pytest", "ruff", "schemathesis", "hypothesis", "mypy", "celery-types", "playwright"}


def normalize(name: str) -> str:
    """PEP 503: `typing_extensions` and `typing-extensions` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: list[str]) -> dict[str, str]:
    """name -> version of requirement lines; every line must be an exact `==` pin."""
    found: dict[str, str] = {}
    for line in lines:
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        name = normalize(match["name"])
        assert name not in found, f"{name} pinned twice"
        found[name] = match["version"]
    return found


def lock(layer: str) -> dict[str, str]:
    text = (LOCKS / f"{layer}.lock").read_text()
    return pins([line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")])


def instructions(dockerfile: str = DOCKERFILE) -> list[str]:
    """A Dockerfile's instructions, continuation lines joined, comments left out (they
    may name dev.lock to say why it is not installed)."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    return [step.strip() for step in re.split(r"(?<!\\)\n", "\n".join(lines)) if step.strip()]


def test_the_image_runs_a_celery_worker_on_the_training_queue() -> None:
    assert 'ENTRYPOINT ["ftsvc"]' in DOCKERFILE and 'CMD ["worker"]' in DOCKERFILE
    command = worker_command()
    assert command[1:6] == ["-m", "celery", "-A", "worker.celery_app", "worker"]
    assert command[command.index("-Q") + 1] == "training"
    # A light worker process; each job runs in a new process of its own (GPU memory returned).
    assert command[command.index("--pool") + 1] == "threads"


def test_the_image_installs_cuda_torch_the_runtime_and_worker_locks_and_liger() -> None:
    torch_pin = lock("worker")["torch"].split("+")[0]  # the lock's CPU build, e.g. 2.13.0+cpu
    assert f"torch=={torch_pin} --index-url https://download.pytorch.org/whl/cu" in DOCKERFILE
    assert lock("worker")["bitsandbytes"] == "0.50.2"
    steps = instructions()
    copies = " ".join(step for step in steps if step.startswith("COPY"))
    assert all(f"requirements/{layer}.lock" in copies for layer in ("runtime", "preflight", "worker"))
    install = next(step for step in steps if "pip install -r" in step)
    assert "grep -v '^torch==' requirements/worker.lock" in install  # the CUDA build stays
    assert "-r requirements/runtime.lock -r requirements/preflight.lock" in install and "liger-kernel==" in install
    # No test, lint or type-checking tools in production, and no leftover single lock.
    assert not [step for step in steps if "dev.lock" in step or "requirements.lock" in step]
    assert not (ROOT / "requirements.lock").exists()
    assert DOCKERFILE.startswith("# GPU training worker") and "FROM nvidia/cuda:" in DOCKERFILE


def test_each_package_is_pinned_in_exactly_one_lock() -> None:
    layers = {layer: lock(layer) for layer in LAYERS}
    for i, lower in enumerate(LAYERS):
        for upper in LAYERS[i + 1 :]:
            both = layers[lower].keys() & layers[upper].keys()
            assert not both, f"in both {lower}.lock and {upper}.lock: {sorted(both)}"
    assert {"fastapi", "sqlalchemy", "celery", "redis", "psycopg-binary"} <= layers["runtime"].keys()
    assert "torch" not in layers["runtime"] and "transformers" not in layers["runtime"]  # the API needs no torch
    assert "torch" not in layers["preflight"] and "transformers" in layers["preflight"]  # tokenizers, no torch


def test_dev_tools_are_only_in_the_dev_lock() -> None:
    assert DEV_TOOLS <= lock("dev").keys()
    for layer in ("runtime", "preflight", "worker"):
        assert not DEV_TOOLS & lock(layer).keys(), layer


def test_pyproject_groups_pin_what_their_locks_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {
        "runtime": project["dependencies"],
        "preflight": project["optional-dependencies"]["preflight"],
        "worker": project["optional-dependencies"]["worker"],
        "dev": project["optional-dependencies"]["dev"],
    }
    for layer, requirements in groups.items():
        locked = lock(layer)
        for name, version in pins(requirements).items():
            # pyproject names the release (torch==2.13.0), the lock may name its build (+cpu).
            assert locked.get(name, "").split("+")[0] == version, (layer, name, version, locked.get(name))


def test_compose_gives_workers_a_gpu_postgres_and_redis() -> None:
    worker = SERVICES["worker-gpu0"]
    assert worker["command"] == ["worker", "--queues", "training"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert worker["environment"]["FTSVC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert worker["environment"]["FTSVC_BROKER_URL"].startswith("redis://")


def test_the_slim_image_serves_the_api_from_the_runtime_and_preflight_locks_alone() -> None:
    steps = instructions(SLIM_DOCKERFILE)
    assert steps[0] == "FROM python:3.11-slim" and not [step for step in steps if "cuda" in step.lower()]
    install = next(step for step in steps if "pip install -r" in step)
    assert install == "RUN pip install -r requirements/runtime.lock -r requirements/preflight.lock"
    assert not [step for step in steps if "worker.lock" in step or "dev.lock" in step or "torch" in step]
    assert 'ENTRYPOINT ["ftsvc"]' in SLIM_DOCKERFILE and 'CMD ["api", "--host", "0.0.0.0"' in SLIM_DOCKERFILE


def test_compose_runs_the_api_and_the_pre_flight_worker_from_the_slim_image() -> None:
    for name in ("api", "preflight", "migrate"):
        assert SERVICES[name]["build"]["dockerfile"] == "Dockerfile", name
    assert SERVICES["preflight"]["command"] == ["worker", "--queues", "preflight", "--concurrency", "2"]
    assert SERVICES["worker-gpu0"]["build"]["dockerfile"] == "Dockerfile.gpu"
