"""How long `POST /v1/fine_tuning/jobs` takes on a large training file, and when the
job's statistics arrive, beside the code of an earlier tree measured in the same run.

    .venv/bin/python bench/job_creation.py [--megabytes 1024] [--before-tree DIR]
                                           [--before-megabytes 12]

Each side runs as in production, from its own source tree, on its own Postgres database
(`ftsvc_bench_create_<side>`, migrated by that tree) with Redis db 8 as the broker: the
API (`ftsvc api`) and, where the tree has one, a pre-flight worker. A JSONL of chat
examples (about 2 KB each, random words) is generated, uploaded through the API, and a
job is created on it; the report gives the upload's time, the POST's latency, and the
time until the job left `validating_files` with its statistics. The earlier tree
computed the statistics inside the POST, so it runs on a smaller file
(`--before-megabytes`): at 1 GB its POST would outlast any client timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BROKER_URL = "redis://127.0.0.1:6379/8"
WORDS = [f"w{i:x}" for i in range(4096)] + ["the", "model", "answer", "data", "train", "token"]


@dataclass(frozen=True)
class Result:
    side: str
    megabytes: float
    examples: int
    upload_s: float
    post_ms: float
    post_status: int
    statistics_s: float | None
    final_status: str


def make_jsonl(path: Path, megabytes: float, seed: int = 0) -> int:
    """Chat examples of about 2 KB until the file has `megabytes` MB; returns how many."""
    rng = random.Random(seed)
    target, written, examples = megabytes * 1e6, 0, 0
    with path.open("w") as out:
        while written < target:
            user = " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))
            assistant = " ".join(rng.choices(WORDS, k=rng.randint(50, 400)))
            line = json.dumps(
                {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
            )
            out.write(line + "\n")
            written += len(line) + 1
            examples += 1
    return examples


def _env(tree: Path, side: str, data_dir: Path) -> dict[str, str]:
    database = f"ftsvc_bench_create_{side}"
    return os.environ | {
        "PYTHONPATH": str(tree),
        "FTSVC_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
        "FTSVC_BROKER_URL": BROKER_URL,
        "FTSVC_DATA_DIR": str(data_dir),
        "FTSVC_KEY_PEPPER": "bench-pepper",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _recreate_database(side: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "ftsvc_bench_create_{side}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "ftsvc_bench_create_{side}"'))
    admin.dispose()


def _ftsvc(tree: Path, env: dict[str, str], *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "ftsvc.cli", *args], cwd=tree, env=env, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"ftsvc {' '.join(args)} failed in {tree}:\n{run.stderr[-2000:]}")
    return run.stdout


@contextmanager
def service(tree: Path, side: str, data_dir: Path, port: int) -> Iterator[str]:
    """The API of `tree` on `port` (and its pre-flight worker, if it has one); yields an API key."""
    env = _env(tree, side, data_dir)
    _recreate_database(side)
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()
    _ftsvc(tree, env, "migrate")
    _ftsvc(tree, env, "make-tiny-model")
    key = _ftsvc(tree, env, "create-org", "bench").split("API key ")[1].split(": ")[1].split()[0]
    log = (data_dir / f"{side}.log").open("ab")
    commands = [[sys.executable, "-m", "ftsvc.cli", "api", "--port", str(port)]]
    if (tree / "worker" / "preflight.py").exists():
        commands.append([sys.executable, "-m", "ftsvc.cli", "worker", "--queues", "preflight", "--concurrency", "2"])
    processes = [
        subprocess.Popen(c, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for c in commands
    ]
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the {side} API did not start; see {log.name}")
            time.sleep(0.3)
        yield key
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def measure(tree: Path, side: str, data: Path, megabytes: float, examples: int, timeout: float) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-create-{side}-") as tmp,
        service(tree, side, Path(tmp), 8741) as key,
    ):
        url = "http://127.0.0.1:8741/v1"
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=None) as client:
            started = time.perf_counter()
            with data.open("rb") as handle:
                upload = client.post(f"{url}/files", files={"file": (data.name, handle)}, data={"purpose": "fine-tune"})
            upload_s = time.perf_counter() - started
            upload.raise_for_status()
            started = time.perf_counter()
            created = client.post(
                f"{url}/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": upload.json()["id"]}
            )
            post_ms = (time.perf_counter() - started) * 1000
            job = created.json()
            statistics_s = None
            while created.is_success and job["status"] == "validating_files":
                if time.perf_counter() - started > timeout:
                    break
                time.sleep(0.5)
                job = client.get(f"{url}/fine_tuning/jobs/{job['id']}").json()
            if created.is_success and job["status"] != "validating_files":
                statistics_s = time.perf_counter() - started
            status = job.get("status", "refused") if created.is_success else f"HTTP {created.status_code}"
            return Result(side, megabytes, examples, upload_s, post_ms, created.status_code, statistics_s, status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=1024)
    parser.add_argument("--before-tree", type=Path, help="an earlier checkout (git worktree) to measure beside")
    parser.add_argument("--before-megabytes", type=float, default=12)
    parser.add_argument("--statistics-timeout", type=float, default=3600)
    args = parser.parse_args()
    runs = [(ROOT, "after", args.megabytes)]
    if args.before_tree:
        runs = [
            (args.before_tree.resolve(), "before", args.before_megabytes),
            (ROOT, "after", args.before_megabytes),
            *runs,
        ]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-create-data-") as tmp:
        for tree, side, megabytes in runs:
            data = Path(tmp) / f"chat-{megabytes:g}mb.jsonl"
            examples = make_jsonl(data, megabytes) if not data.exists() else sum(1 for _ in data.open())
            results.append(measure(tree, side, data, megabytes, examples, args.statistics_timeout))
            print(results[-1], flush=True)
    print("\n| code | file | examples | upload s | POST ms | POST status | statistics after s | status |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        stats = f"{r.statistics_s:,.1f}" if r.statistics_s is not None else "-"
        print(
            f"| {r.side} | {r.megabytes:g} MB | {r.examples:,} | {r.upload_s:,.1f} | {r.post_ms:,.0f} | "
            f"{r.post_status} | {stats} | {r.final_status} |"
        )


if __name__ == "__main__":
    main()
