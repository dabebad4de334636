"""Small helpers the tests share: uploads, job polling, error-body checks."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TERMINAL = {"succeeded", "failed", "cancelled"}


@contextmanager
def changed_settings(**values: str) -> Iterator[None]:
    """This process's settings (an in-process API's) with `values` for a while."""
    from core.settings import get_settings

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request; it answers what is put
    in `answers` first, in order (a status and its body), then 200 "ok"."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Received] = queue.Queue()
        self.answers: list[tuple[int, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.put(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status, answer = receiver.answers.pop(0) if receiver.answers else (200, b"ok")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ftsvc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 30) -> Received:
        return self.requests.get(timeout=timeout)

    def assert_nothing(self, wait: float) -> None:
        try:
            unexpected = self.requests.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"the receiver got a request: {unexpected}")


def readme_verify() -> Callable[[str, dict[str, str], bytes], bool]:
    """The verification snippet of the README's Webhooks section, as a receiver runs it."""
    namespace: dict[str, Any] = {}
    exec(python_block((ROOT / "README.md").read_text(), "## Webhooks"), namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


def file_rows() -> int:
    from sqlalchemy import func, select

    from core.db import session_scope
    from core.models import File

    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(File)) or 0


def stored_objects() -> set[str]:
    """The names of the uploaded files' objects in storage."""
    from core.settings import get_settings

    root = get_settings().storage_root / "files"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def fresh_org(name: str) -> tuple[str, str]:
    """A new organization and an API key of it: (id, key)."""
    from core.auth import create_key, create_organization
    from core.db import session_scope

    with session_scope() as session:
        org = create_organization(session, name)
        return org.id, create_key(session, org.id)[1]


def stored_keys(prefix: str = "") -> set[str]:
    """Every object in storage under `prefix` (all of them by default), by key."""
    from core.settings import get_settings

    root = get_settings().storage_root
    keys = {p.relative_to(root).as_posix() for p in (root / prefix).rglob("*") if p.is_file()}
    return {key for key in keys if not key.startswith(".tmp/")}  # uploads in progress


def stored_checkpoint(job_id: str, step: int = 1) -> str:
    """A checkpoint of the job as a worker records one (a stored object and its row)."""
    from core import checkpoints
    from core.db import session_scope
    from core.storage import StoredObject, get_storage

    key = f"checkpoints/{job_id}/step-{step}/adapter.tar.gz"
    with get_storage().writer(key) as out:
        out.write(b"adapter")
    stored = StoredObject(key, out.bytes, out.sha256)
    with session_scope() as session:
        return checkpoints.record(session, job_id, step, {"step": step}, stored, stored).id


def extract_adapter(archive: bytes, destination: Path) -> Path:
    """An adapter download extracted: its one top folder, named after the model (its
    fine-tuned model name, or its checkpoint's, made a file name)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tops = {name.split("/")[0] for name in tar.getnames()}
        assert len(tops) == 1, f"the archive has more than one top folder: {sorted(tops)}"
        tar.extractall(destination, filter="data")
    folder = destination / tops.pop()
    assert folder.is_dir()
    return folder


def python_block(card: str, heading: str) -> str:
    """The first Python block after a heading of a model card."""
    after = card.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)  # type: ignore[union-attr]


def front_matter(card: str) -> dict[str, Any]:
    """A model card's YAML front matter."""
    import yaml

    assert card.startswith("---\n")
    return dict(yaml.safe_load(card.split("---\n")[1]))


def card_peft_snippet(adapter: Path, base_model: Path) -> str:
    """The PEFT code of an adapter's model card, with the local base model's path where
    the card says to put it."""
    snippet = python_block((adapter / "README.md").read_text(), "### With PEFT")
    line = f'base_model = "{base_model.name}"  # the base model: replace with the path of your copy of it'
    assert snippet.count(line) == 1, snippet
    return snippet.replace(line, f"base_model = {json.dumps(str(base_model))}")


def run_snippet(snippet: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A model card's loading code in a fresh interpreter, which then prints how many
    tokens it generated (a random tiny model's text may decode to nothing)."""
    count = '\nprint(output.shape[1] - inputs["input_ids"].shape[1])'
    return subprocess.run([sys.executable, "-c", snippet + count], cwd=cwd, capture_output=True, text=True, timeout=300)


def unsent_queued_job(org_id: str, training_file: str, **spec: Any) -> str:
    """A queued job that no broker message names yet (created, its pre-flight skipped,
    never published), so no worker takes it meanwhile; `spec`: more of its spec."""
    from core.db import session_scope
    from core.job_creation import create_job
    from core.jobs import transition
    from core.specs import JobSpec
    from core.states import JobStatus

    with session_scope() as session:
        job_spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": training_file} | spec)
        job_id = create_job(session, org_id, job_spec).id
        transition(session, job_id, JobStatus.QUEUED, message="queued by the test")
    return job_id


def succeeded_job(org_id: str, training_file: str, model: str = "tiny-llama", steps: int = 3, **spec: Any) -> str:
    """A job that succeeded through the worker's own publishing (claimed under a lease, a
    loss logged at its last step, its adapter archived and recorded as its artifact and
    final checkpoint), never sent to a queue and without training: its adapter is a
    stand-in, no real adapter. Returns its fine-tuned model's name."""
    import tempfile

    from core import leases
    from core.db import session_scope
    from core.events import record_metric
    from core.jobs import fine_tuned_model_name
    from core.storage import get_storage
    from worker.publish import publish_success

    job_id = unsent_queued_job(org_id, training_file, model=model, **spec)
    owner = f"test:{job_id}"
    with session_scope() as session:
        claim = leases.claim(session, job_id, owner, "test-host")
        assert claim is not None
        record_metric(session, job_id, steps, {"loss": 1.5, "mean_token_accuracy": 0.5})
    with tempfile.TemporaryDirectory() as work:
        adapter = Path(work) / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 16}))
        (adapter / "adapter_model.safetensors").write_bytes(b"stand-in weights")
        assert publish_success(get_storage(), claim.job, owner, claim.attempt, adapter, steps, steps)
    return fine_tuned_model_name(claim.job)


def unsent_merge(org_id: str, model: str, register_as: str | None = None) -> str:
    """A queued merge of the organization's fine-tuned model or checkpoint that no broker
    message names (so no worker takes it); returns its id."""
    from core.db import session_scope
    from core.merges import MergeRequest, create_merge

    with session_scope() as session:
        return create_merge(session, org_id, model, MergeRequest(register_as=register_as)).id


def unsent_evaluation(org_id: str, job_id: str, file_id: str) -> str:
    """A queued evaluation of the organization's succeeded job that no broker message
    names (so no worker takes it); returns its id."""
    from core.db import session_scope
    from core.evaluations import EvaluationRequest, create_evaluation

    with session_scope() as session:
        return create_evaluation(session, org_id, job_id, EvaluationRequest(file=file_id)).id


def without_chat_template(model: Path, target: Path) -> Path:
    """A copy of the model without its chat template: it gets the default (ChatML),
    which renders no tools."""
    shutil.copytree(model, target)
    (target / "chat_template.jinja").unlink()
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_embedded_service(data_dir: Path, port: int, log_path: Path, **settings: str) -> subprocess.Popen[bytes]:
    """`ftsvc serve` in the embedded mode (only the data directory and `settings` set:
    everything else takes the embedded defaults), in a process group of its own, once it
    answers /healthz."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSVC_")}
    env |= {"FTSVC_DATA_DIR": str(data_dir)} | settings
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "ftsvc.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(port, server, 120, log_path)
    except BaseException:
        os.killpg(server.pid, signal.SIGKILL)
        raise
    return server


def stop_embedded_service(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person stops it; its whole process group is killed if it is still
    running a minute later."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def wait_healthy(port: int, process: Any, timeout: float, log: Path) -> None:
    """Until a server process answers /healthz; fails with its log if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except OSError:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.2)


def jsonl(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def chat(user: str = "Hi", assistant: str = "Hello!") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def upload(  # type: ignore[no-untyped-def]
    client: TestClient,
    content: bytes,
    filename: str = "data.jsonl",
    purpose: str = "fine-tune",
    data_format: str | None = None,
):
    data = {"purpose": purpose} | ({"format": data_format} if data_format else {})
    return client.post("/v1/files", files={"file": (filename, content)}, data=data)


def upload_ok(client: TestClient, content: bytes, filename: str = "data.jsonl") -> str:
    response = upload(client, content, filename)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def assert_error(response: Any, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """Every error has the OpenAI shape; returns the inner error object."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


def wait_for(
    client: TestClient, job_id: str, statuses: set[str], timeout: float = 240, collection: str = "/v1/fine_tuning/jobs"
) -> dict[str, Any]:
    """Until the job (or the object of `collection`, such as /v1/merges) is in `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{collection}/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert job["status"] not in TERMINAL, f"job ended as {job['status']}: {job['error']}"
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout}s"
        time.sleep(0.2)


def all_events(client: TestClient, job_id: str, collection: str = "/v1/fine_tuning/jobs") -> list[dict[str, Any]]:
    """Every event of a job (or of the object of `collection`), oldest first, following the cursor."""
    events: list[dict[str, Any]] = []
    after = None
    while True:
        params = {"limit": 100} | ({"after": after} if after else {})
        page = client.get(f"{collection}/{job_id}/events", params=params).json()
        events.extend(page["data"])
        if not page["has_more"]:
            return events[::-1]
        after = page["data"][-1]["id"]


def usage(client: TestClient) -> dict[str, Any]:
    """The organization's usage, as the API answers it."""
    response = client.get("/v1/organization/usage")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def stored_size(key: str) -> int:
    """The size of an object in storage."""
    from core.settings import get_settings

    return (get_settings().storage_root / key).stat().st_size


def assert_tensorboard_matches(archive: bytes, metrics: list[dict[str, Any]]) -> None:
    """The TensorBoard events, read by TensorBoard's own reader, hold every point of the
    job's curve: the same steps, and the same values in TensorBoard's float32."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar, tempfile.TemporaryDirectory() as logdir:
        names = tar.getnames()
        tar.extractall(logdir, filter="data")
        assert len(names) == 1 and names[0].startswith("events.out.tfevents."), names
        events = EventAccumulator(str(logdir))
        events.Reload()
    for split in ("train", "valid"):
        points = [m for m in metrics if m["split"] == split]
        scalars = events.Scalars(f"{split}/loss")
        assert [s.step for s in scalars] == [m["step"] for m in points]
        assert [s.value for s in scalars] == [np.float32(m["loss"]) for m in points]
        assert [s.wall_time for s in scalars] == [m["created_at"] for m in points]
    assert "train/learning_rate" in events.Tags()["scalars"]


def assert_mlflow_matches(text: str, metrics: list[dict[str, Any]]) -> None:
    """MLflow's metric fields, one row per value of the curve, timestamps in milliseconds."""
    from worker.result_files import SERIES

    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and list(rows[0]) == ["key", "value", "timestamp", "step"]
    values = {(f"{m['split']}/{name}", m["step"]) for m in metrics for name in SERIES if m[name] is not None}
    assert sorted((r["key"], int(r["step"])) for r in rows) == sorted(values)
    for split in ("train", "valid"):
        losses = [r for r in rows if r["key"] == f"{split}/loss"]
        points = [m for m in metrics if m["split"] == split]
        assert [(int(r["step"]), float(r["value"])) for r in losses] == [(m["step"], m["loss"]) for m in points]
        assert [int(r["timestamp"]) for r in losses] == [m["created_at"] * 1000 for m in points]


class ServiceProcess:
    """A service command (`ftsvc api`, `ftsvc inference`) as a process of its own on the
    test database, once it answers /healthz; `stop` as a supervisor stops it (SIGTERM)."""

    def __init__(self, command: list[str], port: int, log_path: Path, **settings: str) -> None:
        self.port, self.url, self.log_path = port, f"http://127.0.0.1:{port}", log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ftsvc.cli", *command, "--port", str(port)],
                cwd=ROOT,
                env=os.environ | settings,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_healthy(port, self.process, 120, log_path)
        except BaseException:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_inference_server(log_dir: Path, **settings: str) -> ServiceProcess:
    """`ftsvc inference` on the CPU, registered in the test database."""
    port = free_port()
    return ServiceProcess(["inference", "--device", "cpu"], port, log_dir / f"inference-{port}.log", **settings)


def start_api(log_dir: Path, **settings: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(["api"], port, log_dir / f"api-{port}.log", **settings)
