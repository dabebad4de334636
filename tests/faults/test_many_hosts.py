"""Many hosts, nothing shared but Postgres, Redis and the object store: the API and two
workers as processes of their own, each with its own data directory (its own storage
root, models root, model cache and temporary directory), as if on three machines, and
artifacts on S3 (moto's standalone server). A whole job: the upload goes to the bucket, a
worker reads it from there for the pre-flight and training, checkpoints to it, is killed;
the other worker resumes from the checkpoint it reads from the bucket and publishes the
adapter there, which the API streams back."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.s3_storage import S3Storage
from tests.conftest import DATA_DIR, ROOT, TEST_ORG, S3Server, Workers
from tests.faults.conftest import assert_no_overlap, attempts
from tests.faults.test_worker_faults import spec, train_losses, wait_until
from tests.helpers import EXAMPLES, free_port, upload_ok, wait_for, wait_healthy

pytestmark = pytest.mark.slow

# Queues of their own: the session's workers (local storage) must not take these jobs.
QUEUES = {"FTSVC_TRAINING_QUEUE": "training-hosts", "FTSVC_PREFLIGHT_QUEUE": "preflight-hosts"}
STEPS = 32


@dataclass
class Hosts:
    api: httpx.Client
    workers: Workers
    worker_env: dict[str, dict[str, str]]  # by host name
    data_dirs: list[Path]
    store: S3Storage


def host(name: str, tiny_model: Path, storage_url: str) -> tuple[Path, dict[str, str]]:
    """A host's data directory, with the base model installed in its models root, and the
    settings of its processes."""
    data_dir = Path(DATA_DIR / "hosts" / name)
    shutil.copytree(tiny_model, data_dir / "models" / tiny_model.name)
    (data_dir / "tmp").mkdir()
    env = QUEUES | {"FTSVC_DATA_DIR": str(data_dir), "FTSVC_STORAGE_URL": storage_url, "TMPDIR": str(data_dir / "tmp")}
    return data_dir, env


@pytest.fixture(scope="module")
def hosts(tiny_model: Path, api_keys: dict[str, str], s3_server: S3Server) -> Iterator[Hosts]:
    prefix = f"hosts-{os.getpid()}"
    storage_url = s3_server.url(prefix)
    api_dir, api_env = host("api", tiny_model, storage_url)
    port = free_port()
    log_path = api_dir / "api.log"
    with log_path.open("wb") as log:
        api = subprocess.Popen(
            [sys.executable, "-m", "ftsvc.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=os.environ | api_env | {"FTSVC_MAINTENANCE_INTERVAL_SECONDS": "0.5"},  # the reaper runs here
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    workers = Workers()
    try:
        wait_healthy(port, api, 120, log_path)
        worker_env, data_dirs = {}, [api_dir]
        for name in ("gpu-host-a", "gpu-host-b"):
            data_dir, env = host(name, tiny_model, storage_url)
            worker_env[name], data_dirs = env, [*data_dirs, data_dir]
        headers = {"Authorization": f"Bearer {api_keys[TEST_ORG]}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
            yield Hosts(client, workers, worker_env, data_dirs, S3Storage(s3_server.bucket, prefix))
    finally:
        for name in list(workers.processes):
            workers.stop(name)
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=60)


def start_worker(hosts: Hosts, name: str) -> str:
    return hosts.workers.start(list(QUEUES.values()), **hosts.worker_env[name])


def stored_keys(store: S3Storage) -> set[str]:
    pages = store._client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=f"{store.prefix}/")
    return {item["Key"].removeprefix(f"{store.prefix}/") for page in pages for item in page.get("Contents", [])}


def worker_running(hosts: Hosts, owner: str) -> str:
    """The worker whose job process holds a lease (`owner`: host:pid:nonce): the job
    process is in its worker's process group."""
    group = os.getpgid(int(owner.split(":")[1]))
    [name] = [name for name, process in hosts.workers.processes.items() if process.pid == group]
    return name


def test_a_job_moves_between_hosts_that_share_only_the_database_broker_and_store(hosts: Hosts) -> None:
    client = hosts.api
    for name in hosts.worker_env:
        start_worker(hosts, name)
    file_id = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    job = client.post("/v1/fine_tuning/jobs", json=spec(file_id, STEPS, checkpoint_steps=4)).json()
    checkpoints = f"/v1/fine_tuning/jobs/{job['id']}/checkpoints"
    wait_until(lambda: client.get(checkpoints).json()["data"], 180, "a first checkpoint")
    wait_until(lambda: max(train_losses(client, job["id"]), default=0) >= 6, 60, "step 6")
    first = worker_running(hosts, attempts(job["id"])[0]["owner"])
    hosts.workers.kill(first)  # SIGKILL, mid-training: that host is gone

    done = wait_for(client, job["id"], {"succeeded"}, timeout=300)
    history = attempts(job["id"])
    assert [a["outcome"] for a in history] == ["lease_expired", "succeeded"] and done["attempts"] == 2
    resumed_from = history[1]["resumed_from_step"]
    assert resumed_from is not None and resumed_from >= 4 and resumed_from % 4 == 0
    assert_no_overlap(history)
    assert sorted(train_losses(client, job["id"])) == list(range(1, STEPS + 1))

    # The adapter, streamed from the bucket by the API.
    download = client.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter")
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == download.headers["x-artifact-sha256"]
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = {name.split("/")[-1] for name in tar.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= names
    newest = client.get(checkpoints).json()["data"][1]
    checkpoint = client.get(f"{checkpoints}/{newest['id']}/adapter")
    assert hashlib.sha256(checkpoint.content).hexdigest() == newest["adapter_sha256"]

    # Everything went through the store: the upload, both runs' checkpoints, the adapter
    # and the result files; no host kept an object of its own.
    keys = stored_keys(hosts.store)
    assert f"files/{file_id}" in keys
    assert any(key.startswith(f"checkpoints/{job['id']}/") and key.endswith("/state.tar") for key in keys)
    assert f"artifacts/{job['id']}/attempt-2/adapter.tar.gz" in keys
    assert {f"files/{result}" for result in done["result_files"]} <= keys
    for data_dir in hosts.data_dirs:
        local = [path for path in (data_dir / "storage").rglob("*") if path.is_file()]
        assert not local, f"{data_dir.name} stored {local}"
