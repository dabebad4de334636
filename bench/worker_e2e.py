"""The worker end to end on whatever device this machine has: the embedded default
(SQLite, the SQLAlchemy broker, local storage), a real Celery worker process, and a job
on a random-weight model of a benchmark shape, submitted the way the API submits it.
Prints the job's events, its loss curve and the published adapter; with
`--checkpoint-steps`, each checkpoint (its size, and what saving it cost the run: the
training interval that includes the save against the median interval without one); with
`--pause-at-step`, pauses the running job there and resumes it once paused.

    python bench/worker_e2e.py --shape 8b --steps 200 --tokens-per-step 2048
    python bench/worker_e2e.py --shape 8b --steps 200 --tokens-per-step 2048 --checkpoint-steps 50
    python bench/worker_e2e.py --shape 8b --steps 60 --tokens-per-step 2048 --pause-at-step 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
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
    parser.add_argument("--checkpoint-steps", type=int, default=None, help="default: the job's (auto)")
    parser.add_argument("--pause-at-step", type=int, default=None, help="pause once a step at or past it is logged")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ftsvc-e2e-"))
    os.environ.update(FTSVC_DATA_DIR=str(data_dir), FTSVC_MODELS_ROOT=args.models)
    from bench.train_throughput import build_model
    from core import files, job_creation, job_preflight, jobs
    from core.db import session_scope
    from core.events import metrics_for
    from core.migrate import upgrade_database
    from core.models import LOCAL_ORG
    from core.specs import JobSpec
    from core.storage import StoredObject, get_storage
    from ftsvc.cli import worker_command

    upgrade_database()
    model_dir = build_model(args.shape, Path(args.models))
    storage = get_storage()
    with storage.writer("files/file-e2e") as out:
        out.write(chat_dataset(args.examples))
    stored = StoredObject("files/file-e2e", out.bytes, out.sha256)
    file = files.ingest_upload(storage, LOCAL_ORG, "file-e2e", "arith.jsonl", "fine-tune", stored)
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
                }
                | ({} if args.checkpoint_steps is None else {"checkpoint_steps": args.checkpoint_steps}),
                "performance": {"tokens_per_step": args.tokens_per_step},
            },
        }
    )
    with session_scope() as session:
        job_id = job_creation.create_job(session, LOCAL_ORG, spec).id
    job_preflight.run_preflight(job_id)  # what a pre-flight worker does; it queues the job
    print(f"submitted {job_id}", flush=True)

    worker = subprocess.Popen(worker_command(), cwd=ROOT, stdout=sys.stdout, stderr=subprocess.STDOUT)
    started = time.monotonic()
    pause_at = args.pause_at_step
    try:
        while time.monotonic() - started < args.timeout:
            with session_scope() as session:
                status = jobs.get_job(session, LOCAL_ORG, job_id).status
                reached = pause_at is not None and any(m.step >= pause_at for m in metrics_for(session, job_id))
                if reached:
                    print(f"pausing at step >= {pause_at} after {time.monotonic() - started:.0f}s", flush=True)
                    jobs.pause_job(session, LOCAL_ORG, job_id)
                    pause_at = None
            if status in ("succeeded", "failed", "cancelled"):
                break
            if status == "paused":
                print(f"paused after {time.monotonic() - started:.0f}s; resuming", flush=True)
                jobs.resume_job(LOCAL_ORG, job_id)
            time.sleep(2 if args.pause_at_step is None else 0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    elapsed = time.monotonic() - started

    from core.artifacts import ADAPTER, get_artifact
    from core.checkpoints import list_checkpoints
    from core.events import events_after
    from core.leases import attempts_of

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
        # A save at step s lies in the interval from s to the next logged step; each
        # interval's length comes from its token count and rate (perf_counter timed), as
        # event times are whole seconds. The interval to the first logged step (warm-up)
        # has no start point, so it is left out.
        spans = {
            a.step: (b.tokens_seen - a.tokens_seen) / b.tokens_per_second
            for a, b in zip(metrics, metrics[1:], strict=False)
            if b.tokens_per_second and a.tokens_seen is not None and b.tokens_seen is not None
        }
        saves = [
            (i, e) for i, e in enumerate(events) if e.message.startswith("Checkpoint ") and "step" in (e.data or {})
        ]
        plain = [d for step, d in spans.items() if step not in {e.data["step"] for _, e in saves}]
        for i, e in saves:
            span = spans.get(e.data["step"])
            print(
                f"checkpoint {e.data['checkpoint_id']} at step {e.data['step']}: "
                f"{e.created_at - events[i - 1].created_at}s after {events[i - 1].message[:24]!r}; "
                f"state {e.data['state_bytes'] / 1e6:.1f} MB"
                + (
                    f"; its interval {span:.2f}s, median without a save {statistics.median(plain):.2f}s"
                    if span and plain
                    else ""
                )
            )
        for c in reversed(list_checkpoints(session, job_id, None, 100)[0]):
            print(f"kept checkpoint {c.id} step {c.step}: adapter {c.adapter_bytes} bytes, state {c.state_bytes} bytes")
        print(f"attempts: {job.attempt}")
        for a in attempts_of(session, job_id):
            print(f"  attempt {a.number}: resumed from step {a.resumed_from_step}, {a.outcome}")
        print(f"wall time: {elapsed:.1f}s")
        if job.status == "succeeded":
            artifact = get_artifact(session, LOCAL_ORG, job_id, ADAPTER)
            with storage.open(artifact.storage_key) as stream, tarfile.open(fileobj=stream) as tar:
                names = tar.getnames()
            print(f"adapter artifact: {artifact.bytes} bytes, sha256 {artifact.sha256}, files {names}")
    sys.exit(0 if job.status == "succeeded" else 1)


if __name__ == "__main__":
    main()
