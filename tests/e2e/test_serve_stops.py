"""`ftsvc serve` stopped with SIGTERM while a job trains (the embedded mode: SQLite, the
SQLite broker, a fresh data directory): every process it started is gone within its
bound, no orphan keeps training, and the job went back to the queue with a checkpoint."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import EXAMPLES, free_port, start_embedded_service

pytestmark = pytest.mark.slow

GRACE = 20
BOUND = GRACE + 5 + 5  # the workers' grace, the API's 5 s, and some slack to exit


def test_sigterm_to_serve_stops_every_process_it_started(tmp_path: Path) -> None:
    port, data, log_path = free_port(), tmp_path / "var", tmp_path / "serve.log"
    server = start_embedded_service(data, port, log_path, FTSVC_WORKER_STOP_GRACE_SECONDS=str(GRACE))
    try:
        key = (data / "local-api-key").read_text().strip()
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"})
        content = (EXAMPLES / "chat.jsonl").read_bytes()
        upload = api.post("/files", data={"purpose": "fine-tune"}, files={"file": ("chat.jsonl", content)})
        body = {
            "model": "tiny-llama",
            "training_file": upload.json()["id"],
            "qlora": {"training": {"max_steps": 500, "checkpoint_steps": 1000}},
        }
        job_id = api.post("/fine_tuning/jobs", json=body, timeout=60).json()["id"]
        deadline = time.monotonic() + 120
        while not [m for m in api.get(f"/fine_tuning/jobs/{job_id}/metrics").json()["data"] if m["step"] >= 3]:
            assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        started = psutil.Process(server.pid).children(recursive=True)
        groups = {os.getpgid(p.pid) for p in started}
        # The API, the training and pre-flight workers, the inference server.
        assert len(groups) == 4 and any("worker.job_process" in " ".join(p.cmdline()) for p in started)

        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=BOUND + 10)
        took = time.monotonic() - stopping
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    assert server.returncode == 0, log_path.read_text()[-3000:]
    assert took < BOUND, f"serve took {took:.1f} s to stop"
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, left
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)

    # The job was given back at a checkpoint, not left running.
    with sqlite3.connect(data / "ftsvc.db") as db:
        status, lease_owner = db.execute("SELECT status, lease_owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
        steps = [row[0] for row in db.execute("SELECT step FROM checkpoints WHERE job_id = ?", (job_id,))]
    assert (status, lease_owner) == ("queued", None) and len(steps) == 1 and steps[0] >= 3
