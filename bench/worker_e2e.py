"""The worker end to end on whatever device this machine has: the embedded default
(SQLite, the SQLAlchemy broker, local storage), a real Celery worker process, and a job
on a random-weight model of a benchmark shape, submitted the way the API submits it.
Prints the job's events, its loss curve and the published adapter.

    python bench/worker_e2e.py --shape 8b --steps 200 --tokens-per-step 2048
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chat_dataset(n: int) -> bytes:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} plus {b}?"},
                    {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
                ]
            }
        )
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="8b")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tokens-per-step", type=int, default=2048)
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--models", default=str(ROOT / "var" / "bench-models"))
    parser.add_argument("--timeout", type=float, default=480)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ftsvc-e2e-"))
    os.environ.update(FTSVC_DATA_DIR=str(data_dir), FTSVC_MODELS_ROOT=args.models)
    from sqlalchemy import select

    from bench.train_throughput import build_model
    from core import files, jobs
    from core.db import session_scope
    from core.migrate import upgrade_database
    from core.models import LOCAL_ORG, Job
    from core.specs import JobSpec
    from core.storage import StoredObject, get_storage
    from ftsvc.cli import worker_command

    upgrade_database()
    model_dir = build_model(args.shape, Path(args.models))
    storage = get_storage()
    with storage.writer("files/file-e2e") as out:
        out.write(chat_dataset(args.examples))
    stored = StoredObject("files/file-e2e", out.bytes, out.sha256)
    with session_scope() as session:
        file = files.ingest_upload(session, storage, LOCAL_ORG, "file-e2e", "arith.jsonl", "fine-tune", stored)
        spec = JobSpec.model_validate(
            {
                "model": model_dir.name,
                "training_file": file.id,
                "seed": 0,
                "qlora": {
                    "training": {
                        "max_steps": args.steps,
                        "max_seq_length": 512,
                        "learning_rate": 1e-4,
                        "logging_steps": 10,
                    },
                    "performance": {"tokens_per_step": args.tokens_per_step},
                },
            }
        )
        job_id = jobs.submit_job(session, LOCAL_ORG, spec).id
    print(f"submitted {job_id}", flush=True)

    worker = subprocess.Popen(worker_command(), cwd=ROOT, stdout=sys.stdout, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.timeout:
            with session_scope() as session:
                status = session.scalar(select(Job.status).where(Job.id == job_id))
            if status in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(2)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    elapsed = time.monotonic() - started

    from core.artifacts import ADAPTER, get_artifact
    from core.events import events_after, metrics_for

    with session_scope() as session:
        job = jobs.get_job(session, LOCAL_ORG, job_id)
        events = events_after(session, job_id, 0, limit=10_000)
        metrics = [m for m in metrics_for(session, job_id) if m.split == "train"]
        print(f"\njob {job_id}: {job.status} after {elapsed:.0f}s; error: {job.error}")
        print(f"trained tokens: {job.trained_tokens}; runtime: {json.dumps(job.runtime)}")
        print(f"{len(events)} events; first and last:")
        for e in events if len(events) <= 12 else events[:8] + events[-4:]:
            print(f"  [{e.level}] {e.message[:150]}")
        if metrics:
            print(
                f"{len(metrics)} metric points: loss {metrics[0].loss:.3f} at step {metrics[0].step} -> "
                f"{metrics[-1].loss:.3f} at step {metrics[-1].step}; "
                f"last tokens/s {metrics[-1].tokens_per_second}"
            )
        if job.status == "succeeded":
            artifact = get_artifact(session, LOCAL_ORG, job_id, ADAPTER)
            with tarfile.open(fileobj=io.BytesIO(storage.path(artifact.storage_key).read_bytes())) as tar:
                names = tar.getnames()
            print(f"adapter artifact: {artifact.bytes} bytes, sha256 {artifact.sha256}, files {names}")
    sys.exit(0 if job.status == "succeeded" else 1)


if __name__ == "__main__":
    main()
