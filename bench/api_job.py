"""A real job through the HTTP API, start to finish, and where its time goes: the
embedded service (SQLite, the SQLAlchemy broker, local storage) with the API, one
training worker and one pre-flight worker, each a process of its own (no inference
server); a chat dataset with realistic lengths uploaded with POST /v1/files; then two
jobs on the same base model, one after the other, created with every default but the
model (n_epochs "auto": one epoch from 300 examples on), each followed by polling its
job object until it ends. The second job shows the warm start (the base model cached
on the worker, a job process standing by).

    python bench/api_job.py --shape 8b --examples 3000 --out var/bench-out/api_job.json
    python bench/api_job.py --shape tiny --examples 60 --max-steps 4   # the same on a CPU, as a dry run

Per job, seconds on this machine's clock (the service runs here too):
- total: the POST that created the job -> the job seen succeeded;
- start: -> the job seen running (a worker claimed it; pre-flight included, and on its own);
- load: the base model's load, as the job's "Loaded <model>" event says (`load_seconds`,
  and `base_cache`: hit, stored or off, where the worker reports it);
- first step: -> the first training step, from the job's progress (written at the first
  step, with its time) less the pickup; `process_seconds` of the "First training step
  done" event where the worker reports it (seconds since its job process began the job);
- train: first step -> last step (the progress' times), and the real (non-padding) tokens
  per second of the steps after the first, from the job's metric points;
- publish: last step -> the job seen succeeded.
Polling every 0.2 s bounds the error of the times seen by polling.

Data: N chats of one user and one assistant turn whose text lengths, in the bench
model's tokens, are log-normal (median 300, sigma 0.8, clipped to 32..2048: the lengths of
bench/train_throughput.py), a third of each in the user's turn.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_throughput import build_model, lognormal_lengths  # noqa: E402  (after the path is set)

POLL_SECONDS = 0.2
TERMINAL = ("succeeded", "failed", "cancelled")
# Plain English words the chats are made of; the tokenizer splits each into a few tokens.
WORDS = (
    "the model learns a small adapter beside each frozen weight matrix while training runs on chat "
    "examples that users upload to the service and the worker reports its loss curve step by step until "
    "the job succeeded with an adapter published for download question answer capital France Paris "
    "journey thousand miles begins single quick brown fox jumps over lazy dog summarize translate "
    "sentence text quantization stores weights four bits normal float format helpful assistant"
).split()


# -- data ----------------------------------------------------------------------------------------
def text_of(tokens: int, costs: dict[str, int], rng: random.Random) -> str:
    """Words whose tokens, each counted with its leading space, add up to at least `tokens`."""
    words: list[str] = []
    total = 0
    while total < tokens:
        word = rng.choice(WORDS)
        words.append(word)
        total += costs[word]
    return " ".join(words)


def chat_examples(lengths: Sequence[int], count: Callable[[str], int], seed: int = 0) -> list[dict[str, Any]]:
    """A chat per length: a user turn of a third of its tokens and an assistant turn of
    the rest, as `count` (a text's tokens) measures them."""
    rng = random.Random(seed)
    costs = {word: count(" " + word) for word in WORDS}
    examples = []
    for length in lengths:
        asked = max(1, length // 3)
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": text_of(asked, costs, rng)},
                    {"role": "assistant", "content": text_of(length - asked, costs, rng)},
                ]
            }
        )
    return examples


def text_tokens(example: dict[str, Any], count: Callable[[str], int]) -> int:
    return sum(count(m["content"]) for m in example["messages"])


# -- what a job's run took -----------------------------------------------------------------------
@dataclass
class Observed:
    """What polling a job saw, on time.time(): the clock the worker's progress `at` is on."""

    submitted: float
    seen: dict[str, float] = field(default_factory=dict)  # status -> when first seen
    # Each progress the job showed: the worker writes one when training begins (no step
    # time yet), one at the first step, then at most every 2 s, and one at the last step.
    progress: list[dict[str, Any]] = field(default_factory=list)
    ended: float | None = None

    def saw(self, job: dict[str, Any], now: float) -> None:
        self.seen.setdefault(job["status"], now)
        progress = job.get("progress")
        if progress and progress.get("at") is not None and progress not in self.progress[-1:]:
            self.progress.append(progress)
        if job["status"] in TERMINAL and self.ended is None:
            self.ended = now

    def first_step(self) -> float | None:
        """When the first step ended: the time of the progress written then, or, if a
        later one was the first seen, that one's taken back by its mean step time."""
        begun = next((p for p in self.progress if p["seconds_per_step"] is None), None)
        first = next((p for p in self.progress if p["seconds_per_step"] is not None), None)
        if first is None:
            return None
        steps_after_first = first["step"] - (begun["step"] if begun else 0) - 1
        return float(first["at"] - steps_after_first * first["seconds_per_step"])


def event_data(events: Sequence[dict[str, Any]], prefix: str, key: str | None = None) -> dict[str, Any] | None:
    """The data of the first event whose message starts with `prefix` (and whose data has `key`)."""
    for event in events:
        data = event.get("data") or {}
        if event["message"].startswith(prefix) and (key is None or key in data):
            return data
    return None


def training_rate(metrics: Sequence[dict[str, Any]]) -> float | None:
    """Tokens per second of the steps after the first logged one: each point's rate is
    that of the tokens since the point before (timed by the worker), and the first
    point's interval holds the first step's warm-up, so it is left out."""
    points = [m for m in metrics if m["split"] == "train" and m["tokens_seen"] is not None]
    pairs = [(a, b) for a, b in zip(points, points[1:], strict=False) if b["tokens_per_second"]]
    tokens = sum(b["tokens_seen"] - a["tokens_seen"] for a, b in pairs)
    seconds = sum((b["tokens_seen"] - a["tokens_seen"]) / b["tokens_per_second"] for a, b in pairs)
    return tokens / seconds if seconds > 0 else None


def parts(observed: Observed, events: Sequence[dict[str, Any]], metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The job's time split into its parts (None where the run did not show it); `events`
    oldest first."""

    def since(start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else round(end - start, 2)

    picked_up = observed.seen.get("running")
    first_step = observed.first_step()
    last = observed.progress[-1] if first_step is not None else None
    last_step = last["at"] if last else None
    loaded = event_data(events, "Loaded ", "load_seconds") or {}
    stepped = event_data(events, "First training step done") or {}
    rate = training_rate(metrics)
    return {
        "total_s": since(observed.submitted, observed.ended),
        "preflight_s": since(observed.submitted, observed.seen.get("queued")),
        "start_s": since(observed.submitted, picked_up),
        "load_s": loaded.get("load_seconds"),
        "base_cache": loaded.get("base_cache"),
        "loaded_process_s": loaded.get("process_seconds"),
        "first_step_after_pickup_s": since(picked_up, first_step),
        "first_step_process_s": stepped.get("process_seconds"),
        "train_s": since(first_step, last_step),
        "steps": last["step"] if last else None,
        "real_tokens_per_s": None if rate is None else round(rate, 1),
        "publish_s": since(last_step, observed.ended),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:,.1f}{unit}"
        return f"{value:,}{unit}" if isinstance(value, int) else str(value)

    lines = [
        "| job | status | total | start (pre-flight) | load (base cache) | first step after pickup "
        "(process s) | train (steps) | real tokens/s | publish |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        lines.append(
            f"| {i} | {r['status']} | {cell(r['total_s'], ' s')} | {cell(r['start_s'], ' s')} "
            f"({cell(r['preflight_s'], ' s')}) | {cell(r['load_s'], ' s')} ({cell(r['base_cache'])}) | "
            f"{cell(r['first_step_after_pickup_s'], ' s')} ({cell(r['first_step_process_s'], ' s')}) | "
            f"{cell(r['train_s'], ' s')} ({cell(r['steps'])}) | {cell(r['real_tokens_per_s'])} | "
            f"{cell(r['publish_s'], ' s')} |"
        )
    return "\n".join(lines)


# -- the service and its client ------------------------------------------------------------------
class Bench:
    """The embedded service's processes and an HTTP client of its API."""

    def __init__(self, data_dir: Path, timeout: float) -> None:
        from ftsvc.cli import free_local_port, preflight_worker_command, worker_command
        from ftsvc.supervisor import Supervisor

        self.data_dir, self.timeout = data_dir, timeout
        self.supervisor = Supervisor()
        self.port = free_local_port()
        self.logs: dict[str, Path] = {}
        for name, command in (
            ("API", [sys.executable, "-m", "ftsvc.cli", "api", "--port", str(self.port)]),
            ("training worker", worker_command()),
            ("pre-flight worker", preflight_worker_command()),
        ):
            self.logs[name] = data_dir / f"{name.replace(' ', '-')}.log"
            with self.logs[name].open("wb") as log:
                self.supervisor.start(name, command, log)

    def connect(self) -> None:
        import httpx

        base = f"http://127.0.0.1:{self.port}"
        self.supervisor.wait_until_answers("API", f"{base}/healthz", 120)
        key = (self.data_dir / "local-api-key").read_text().strip()
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)

    def check(self) -> None:
        """Raises when a process of the service exited, or this one was asked to stop."""
        if self.supervisor.stop_requested:
            raise KeyboardInterrupt
        if (name := self.supervisor.exited()) is not None:
            raise RuntimeError(f"the {name} exited:\n{self.logs[name].read_text()[-3000:]}")

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, f"/v1{path}", **kwargs)
        if response.is_error:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def until(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} took more than {self.timeout:g} s")
            time.sleep(POLL_SECONDS)

    def live_workers(self) -> int:
        lines = self.http.get("/metrics").text.splitlines()
        return sum(int(float(line.split()[-1])) for line in lines if line.startswith("ftsvc_live_workers "))

    def previewed(self, file_id: str, model: str) -> bool:
        """Whether a pre-flight worker rendered a preview of the file (it is up, with the
        model's tokenizer cached, as on a service that ran before)."""
        response = self.http.get(f"/v1/files/{file_id}/preview", params={"model": model, "n": 1})
        if response.status_code != 503:
            response.raise_for_status()
        return response.status_code == 200

    def run_job(self, body: dict[str, Any]) -> dict[str, Any]:
        observed = Observed(submitted=time.time())
        job = self.call("POST", "/fine_tuning/jobs", json=body)
        print(f"submitted {job['id']}", flush=True)

        def ended() -> bool:
            nonlocal job
            job = self.call("GET", f"/fine_tuning/jobs/{job['id']}")
            observed.saw(job, time.time())
            return job["status"] in TERMINAL

        self.until(f"job {job['id']}", ended)
        events = self.pages(f"/fine_tuning/jobs/{job['id']}/events")
        metrics = self.call("GET", f"/fine_tuning/jobs/{job['id']}/metrics")["data"]
        print(f"{job['id']}: {job['status']}; error: {job['error']}", flush=True)
        for event in (e for e in events if e["type"] == "message"):
            print(f"  [{event['level']}] {event['message'][:160]}")
        result = {"id": job["id"], "status": job["status"], **parts(observed, events, metrics)}
        return result | {
            "loaded": event_data(events, "Loaded ", "load_seconds"),
            "trained_tokens": job["trained_tokens"],
            "statistics": job["statistics"],
            "runtime": job["runtime"],
            "observed": asdict(observed),
            "events": events,
        }

    def pages(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paged list, oldest first (pages come newest first)."""
        items: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.call("GET", path, params={"limit": 100} | ({"after": after} if after else {}))
            items += page["data"]
            if not page["has_more"]:
                return items[::-1]
            after = page["last_id"]

    def stop(self) -> None:
        self.supervisor.stop(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="8b", help="8b, 1b or tiny (bench/train_throughput.py's shapes)")
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--models", default=str(ROOT / "var" / "bench-models"))
    parser.add_argument("--out", default=None, help="write the results here as JSON")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each wait may take (a job, start-up)")
    parser.add_argument("--max-steps", type=int, default=None, help="qlora.training.max_steps (default: the job's)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs on the same base, one after the other")
    parser.add_argument(
        "--gap",
        type=float,
        default=15,
        help="seconds between a job's end and the next one's submission (a standby process starts)",
    )
    args = parser.parse_args()

    models = Path(args.models).resolve()
    models.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(args.shape, models)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    examples = chat_examples(lognormal_lengths(args.examples), count)
    lengths = [text_tokens(e, count) for e in examples]
    print(
        f"{len(examples)} chats: {sum(lengths):,} text tokens, median {statistics.median(lengths):.0f}, "
        f"max {max(lengths)}",
        flush=True,
    )

    data_dir = Path(tempfile.mkdtemp(prefix="ftsvc-api-job-"))
    os.environ.update(
        FTSVC_DATA_DIR=str(data_dir),
        FTSVC_MODELS_ROOT=str(models),
        # Its processes run this source tree, installed or not.
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    from core.auth import ensure_local_key
    from core.db import session_scope
    from core.migrate import upgrade_database

    upgrade_database()
    with session_scope() as session:  # what `ftsvc serve` does on its first run
        ensure_local_key(session, data_dir)
    bench = Bench(data_dir, args.timeout)
    results: list[dict[str, Any]] = []
    try:
        bench.connect()
        data = b"".join(json.dumps(e).encode() + b"\n" for e in examples)
        file = bench.call(
            "POST", "/files", data={"purpose": "fine-tune"}, files={"file": ("chats.jsonl", data, "application/jsonl")}
        )
        print(f"uploaded {file['id']}: {file['bytes']:,} bytes, {file['examples']} examples", flush=True)
        bench.until("a pre-flight worker", lambda: bench.previewed(file["id"], model_dir.name))
        bench.until("a live training worker", lambda: bench.live_workers() > 0)
        body: dict[str, Any] = {"model": model_dir.name, "training_file": file["id"]}
        if args.max_steps is not None:
            body["qlora"] = {"training": {"max_steps": args.max_steps}}
        for i in range(args.jobs):
            if i:
                time.sleep(args.gap)
            results.append(bench.run_job(body))
            if results[-1]["status"] != "succeeded":
                break
    finally:
        bench.stop()

    stats = results[0]["statistics"] or {}
    report = (
        f"### a job through the API: {args.shape} shape, {len(examples)} chats "
        f"({stats.get('tokens_total', sum(lengths)):,} tokens; {stats.get('truncated_examples')} truncated "
        f"at {stats.get('max_seq_length')}); the job: {json.dumps(body | {'training_file': '...'})}\n\n"
        + table(results)
        + "\n\ntrained tokens (loss tokens, all steps): "
        + ", ".join(f"{r['trained_tokens']}" for r in results)
    )
    print("\n" + report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "jobs": results, "report": report}, indent=1))
    print(f"service data and logs: {data_dir}")
    sys.exit(0 if all(r["status"] == "succeeded" for r in results) else 1)


if __name__ == "__main__":
    main()
