"""docker-compose.yml as far as a machine without Docker can check it: valid against the
Compose Specification's JSON schema (the copy check-jsonschema ships, so no network), and
consistent in what the schema cannot see: the services it depends on exist, its named
volumes are declared and none is shared, every application service has the settings the
service needs, one training worker and one inference server per GPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings
from tests.helpers import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services that run the application (`ftsvc <command>` from one of its images).
APP_SERVICES = {name: s for name, s in SERVICES.items() if s.get("build", {}).get("context") == "."}
# What every application service needs: the shared database, broker and store, and the pepper.
REQUIRED_ENV = {
    "FTSVC_DATABASE_URL",
    "FTSVC_BROKER_URL",
    "FTSVC_STORAGE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "FTSVC_KEY_PEPPER",
}


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored Compose Specification schema."""
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_file_is_valid_against_the_compose_specification() -> None:
    run = validate(COMPOSE_FILE)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ('    ports: ["8000:8000"]', '    port: ["8000:8000"]', "'port' was unexpected"),
        ("condition: service_healthy}", "condition: when_ready}", "'when_ready' is not one of"),
        # In the services that take it through `<<:`.
        (
            "  stop_grace_period: 130s",
            "  stop_grace_periods: 130s",
            "services['worker-gpu0']: Unevaluated properties are not allowed ('stop_grace_periods'",
        ),
    ],
)
def test_the_schema_check_refuses_what_compose_would(old: str, new: str, said: str, tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    run = validate(broken)
    assert run.returncode != 0 and said in run.stdout, run.stdout


def test_every_dependency_is_a_service() -> None:
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", {})) <= SERVICES.keys(), name


def named_volumes(service: dict[str, Any]) -> list[str]:
    """The named volumes a service mounts (`name:/path`; a bind mount's source is a path)."""
    sources = [str(v).split(":")[0] if isinstance(v, str) else v.get("source", "") for v in service.get("volumes", [])]
    return [source for source in sources if source and not source.startswith((".", "/", "~"))]


def test_named_volumes_are_declared_and_none_is_shared() -> None:
    mounted = [(volume, name) for name, service in SERVICES.items() for volume in named_volumes(service)]
    assert {volume for volume, _ in mounted} <= set(COMPOSE["volumes"])
    users: dict[str, list[str]] = {}
    for volume, name in mounted:
        users.setdefault(volume, []).append(name)
    # Nothing but Postgres, Redis and the store is shared: every service could be on a host of its own.
    assert {volume: names for volume, names in users.items() if len(names) > 1} == {}


def test_application_services_have_what_the_service_needs() -> None:
    assert {"migrate", "api", "preflight", "worker-gpu0", "worker-gpu1", "inference-gpu0"} <= APP_SERVICES.keys()
    settings = {f"FTSVC_{field.upper()}" for field in Settings.model_fields}
    for name, service in APP_SERVICES.items():
        environment = service["environment"]
        assert REQUIRED_ENV <= environment.keys(), (name, REQUIRED_ENV - environment.keys())
        assert environment["FTSVC_STORAGE_URL"].startswith("s3://")
        assert environment["FTSVC_LOG_FORMAT"] == "json"
        # A misspelt setting would be ignored silently (pydantic-settings drops unknown
        # names).
        unknown = {var for var in environment if var.startswith("FTSVC_")} - settings
        assert not unknown, (name, unknown)
        # The secrets come from the environment of `docker compose`, never from the file.
        for secret in ("FTSVC_KEY_PEPPER", "AWS_SECRET_ACCESS_KEY"):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", environment[secret]), (name, secret)


def gpus_of(service: dict[str, Any]) -> list[str]:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    return [gpu for device in devices if "gpu" in device["capabilities"] for gpu in device["device_ids"]]


def test_each_gpu_runs_one_training_worker_and_one_inference_server() -> None:
    workers = {name: s for name, s in APP_SERVICES.items() if s["command"][:1] == ["worker"] and "deploy" in s}
    servers = {name: s for name, s in APP_SERVICES.items() if s["command"][:1] == ["inference"]}
    assert sorted(gpu for s in workers.values() for gpu in gpus_of(s)) == ["0", "1"]
    assert sorted(gpu for s in servers.values() for gpu in gpus_of(s)) == ["0", "1"]
    for name, worker in workers.items():
        assert name == f"worker-gpu{gpus_of(worker)[0]}"
        assert worker["command"] == ["worker", "--queues", "training"]
        assert worker["build"]["dockerfile"] == "Dockerfile.gpu"
    for name, server in servers.items():
        command = server["command"]
        assert name == f"inference-gpu{gpus_of(server)[0]}"
        # The container sees its one GPU as cuda:0; the API reaches it by service name.
        assert command[command.index("--device") + 1] == "cuda:0"
        port = command[command.index("--port") + 1]
        assert command[command.index("--advertise-url") + 1] == f"http://{name}:{port}"


def test_health_checks_say_whether_each_service_can_serve() -> None:
    api_check = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in api_check
    for name in ("postgres", "redis", "minio", "preflight", "worker-gpu0", "worker-gpu1"):
        assert SERVICES[name]["healthcheck"]["test"], name
    for name in ("inference-gpu0", "inference-gpu1"):
        assert "http://127.0.0.1:8100/healthz" in " ".join(SERVICES[name]["healthcheck"]["test"]), name
    # The bucket exists before anything writes to it; the schema before anything reads it.
    for name, service in APP_SERVICES.items():
        if name != "migrate":
            assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
            assert service["depends_on"]["create-bucket"] == {"condition": "service_completed_successfully"}, name
    bucket = SERVICES["create-bucket"]["command"][-1].split("/", 1)[1]
    assert SERVICES["api"]["environment"]["FTSVC_STORAGE_URL"].startswith(f"s3://{bucket}/")
