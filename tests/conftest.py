"""Test environment: the real Postgres and Redis on this machine (override with
TEST_DATABASE_URL / TEST_BROKER_URL), a database built by the Alembic migrations, the
tiny model, and a real Celery worker process."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(tempfile.mkdtemp(prefix="ftsvc-tests-"))
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/ftsvc_test")
BROKER_URL = os.environ.get("TEST_BROKER_URL", "redis://127.0.0.1:6379/15")

# Settings are read from the environment once per process: set them before any import.
os.environ.update(
    FTSVC_DATA_DIR=str(DATA_DIR),
    FTSVC_DATABASE_URL=DATABASE_URL,
    FTSVC_BROKER_URL=BROKER_URL,
    FTSVC_EVENT_POLL_SECONDS="0.1",
    FTSVC_KEY_PEPPER="test-pepper-not-for-production",
    HF_HUB_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    # In-process API clients run no maintenance loop; the fault tests run `ftsvc maintain`.
    FTSVC_MAINTENANCE_INTERVAL_SECONDS="0",
    # Short leases so a killed worker's job is taken over within seconds.
    FTSVC_LEASE_SECONDS="6",
    # Webhooks: their own queue, so that each webhook test starts the delivery worker with
    # the settings it tests; retries within a second; receivers on plain http.
    FTSVC_WEBHOOK_QUEUE="webhooks",
    FTSVC_WEBHOOK_RETRY_BASE_SECONDS="0.3",
    FTSVC_WEBHOOK_ALLOW_HTTP="true",
    # Multi-GPU jobs run their ranks as CPU processes over gloo here (no GPU).
    FTSVC_CPU_RANKS="1",
    # No standby job processes (on by default for the workers here that describe GPUs):
    # their imports would compete with training on this machine's few cores. Their own
    # tests turn them on (tests/integration/test_standby_process.py).
    FTSVC_STANDBY_PROCESS="off",
)


def _recreate_database() -> None:
    import sqlalchemy as sa

    url = sa.make_url(DATABASE_URL)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def database() -> None:
    from core.migrate import upgrade_database

    _recreate_database()
    upgrade_database()


@pytest.fixture(scope="session", autouse=True)
def broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from core.settings import get_settings
    from worker.tiny_model import ensure_tiny_llama

    return ensure_tiny_llama(get_settings().models_root)


class Workers:
    """Real Celery worker processes on the test broker and database. Each runs in its
    own process group, so `kill` takes the worker and its job's process down at once,
    like a lost machine."""

    # Numbered across all instances: two workers with one node name would share a log
    # file, answer each other's pings and share a row in the registry of workers.
    _numbers = itertools.count(1)

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, queues: Sequence[str] = (), **env: str) -> str:
        """A worker on `queues` (default: the training queue), with extra settings `env`."""
        from core.queue import get_celery
        from ftsvc.cli import worker_command

        name = f"w{next(self._numbers)}@{socket.gethostname()}"
        log_path = DATA_DIR / f"worker-{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*worker_command(queues), "--hostname", name],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while not get_celery().control.ping(destination=[name], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()[-4000:]}")
        self.processes[name] = process
        return name

    def kill(self, name: str) -> None:
        """SIGKILL, no chance to clean up: the job it ran keeps its lease until expiry."""
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def worker(tiny_model: Path) -> Iterator[Workers]:
    """One real Celery worker process (more can be started and killed through it)."""
    workers = Workers()
    workers.start()
    yield workers
    for name in list(workers.processes):
        workers.stop(name)
    if "--show-worker-log" in sys.argv:
        for log_path in DATA_DIR.glob("worker-*.log"):
            print(log_path.read_text())


@pytest.fixture(scope="session")
def preflight_worker(tiny_model: Path) -> Iterator[Workers]:
    """A real pre-flight worker process (job pre-flight and previews): jobs wait in
    `validating_files` until it has read their data."""
    workers = Workers()
    from core.settings import get_settings

    workers.start([get_settings().preflight_queue])
    yield workers
    for name in list(workers.processes):
        workers.stop(name)


TEST_ORG, OTHER_ORG = "org-test", "org-other"


@pytest.fixture(scope="session")
def api_keys(database: None) -> dict[str, str]:
    """One API key for each of two organizations: the tests act for TEST_ORG."""
    from core.auth import create_key, create_organization
    from core.db import session_scope

    keys = {}
    with session_scope() as session:
        for org_id in (TEST_ORG, OTHER_ORG):
            create_organization(session, org_id.removeprefix("org-"), org_id)
            keys[org_id] = create_key(session, org_id)[1]
    return keys


def make_client(key: str | None):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from api.app import create_app

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return TestClient(create_app(), raise_server_exceptions=False, headers=headers)


@pytest.fixture
def client(api_keys: dict[str, str], preflight_worker: Workers):  # type: ignore[no-untyped-def]
    with make_client(api_keys[TEST_ORG]) as client:
        yield client


@pytest.fixture(scope="module")
def client_module(tiny_model: Path, api_keys: dict[str, str], preflight_worker: Workers):  # type: ignore[no-untyped-def]
    """One API client for a module's tests (the tiny model exists for job creation)."""
    with make_client(api_keys[TEST_ORG]) as client:
        yield client


@pytest.fixture(scope="module")
def chat_file(client_module) -> str:  # type: ignore[no-untyped-def]
    """examples/chat.jsonl, uploaded once per module."""
    from tests.helpers import EXAMPLES, upload_ok

    return upload_ok(client_module, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")


@pytest.fixture(scope="module")
def no_tools_model(tiny_model: Path) -> Iterator[str]:
    """The tiny model without its chat template, as a base model: the default template
    (ChatML) renders no tools."""
    from tests.helpers import without_chat_template

    target = without_chat_template(tiny_model, tiny_model.parent / "tiny-llama-no-tools")
    yield target.name
    shutil.rmtree(target)


@dataclass(frozen=True)
class S3Server:
    """moto's standalone S3 server on 127.0.0.1 and its bucket; `env`: what a process
    (or boto3 in this one) needs to reach it."""

    bucket: str
    env: dict[str, str]

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto_server as a process of its own (an S3-protocol server that runs on this
    machine: what it does not cover is said in tests/integration/test_storage.py), with
    one bucket; the AWS_* variables point this process's boto3 at it."""
    from tests.helpers import free_port

    port = free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    log_path = DATA_DIR / "moto.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{env['AWS_ENDPOINT_URL']}/moto-api/", timeout=1)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                os.killpg(server.pid, signal.SIGKILL)
                pytest.fail(f"moto_server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        import boto3

        boto3.session.Session().client("s3").create_bucket(Bucket="ftsvc-tests")
        yield S3Server("ftsvc-tests", env)
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
