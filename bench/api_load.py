"""The HTTP API under load, beside a bare FastAPI endpoint measured in the same run.

    .venv/bin/python bench/api_load.py [--code DIR] [--seconds 30] [--clients 200] [--poll-interval 1]
                                       [--submit-rate 20] [--api-workers 2]

The service is `api.app:create_app` under uvicorn, as `ftsvc api` serves it, in
`--api-workers` processes sharing one listening socket (what `uvicorn --workers` does,
less its TCP_NODELAY bug: see `_listener`), on Postgres (a fresh `ftsvc_bench` database
built by the migrations) with Redis db 14 as the broker. No Celery worker runs, so
submitted jobs stay `validating_files`; a submission still does all the API's work
(authentication, the checks, the rows and events, the publish to the pre-flight queue;
the tokenizer pre-flight itself runs in a pre-flight worker since issue 11, and code
from before that runs it inside the request).

A separate process drives it with asyncio and httpx for `--warmup` + `--seconds`;
requests count when they are in flight at some time in the last `--seconds`:
- `--clients` pollers, each following one of the seeded jobs: GET the job, then GET its
  events, then wait until `--poll-interval` seconds after the previous poll started
  (0: back to back, which measures saturation instead of latency at a given load);
- one submitter POSTing `--submit-rate` jobs per second on a fixed schedule, whether or
  not earlier submissions have answered (open loop).
Then, with `--streams` (default 1,000; 0 skips it), a third phase on the same service:
that many Server-Sent Event streams open on one job (a connection each), while 50
pollers GET the job once a second (50 polls/s) and this process writes `--stream-events`
events to the job through core.events over the counted window, as a worker would, then
ends it. Every stream must stay open, receive every event of the job in order and end
with `event: end`.
The baseline is a one-route FastAPI app returning a constant, served the same way (as
many processes on one socket) and driven by the same pollers; it shows what FastAPI and
uvicorn cost on their own, so the ratio is this service's overhead.
The generator shares the machine's cores with the servers and the database, so the
report gives the cores each used over the counted window (the generator's, the server
processes', the machine's from /proc/stat), and the exceptions the servers logged.
Exits non-zero when the setup fails; the servers' logs stay in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import socket
import ssl
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from multiprocessing.process import BaseProcess
from pathlib import Path
from threading import Event as EventType
from typing import NamedTuple, TypedDict

import httpx
from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/ftsvc_bench"
BROKER_URL = "redis://127.0.0.1:6379/14"
JOBS = "/v1/fine_tuning/jobs"
STATUS, EVENTS, SUBMIT = f"GET {JOBS}/{{id}}", f"GET {JOBS}/{{id}}/events", f"POST {JOBS}"
STREAMING_STATUS = f"{STATUS} (streams open)"
STREAM_POLLERS = 50  # each once a second: the 50 polls/s of the target
BARE = "GET /constant (bare FastAPI)"
TARGET_P99_MS = 100.0
# The last line of a logged traceback: "module.ExceptionName: message".
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\b.*")

bare_app = FastAPI()


@bare_app.get("/constant")
def constant() -> dict[str, str]:
    # A sync route, as all of ours are: both run in Starlette's threadpool, so the
    # ratio leaves out that cost and isolates what our routes do per request.
    return {"status": "ok"}


class Server(NamedTuple):
    url: str
    pids: tuple[int, ...]


class SetupError(Exception):
    """The benchmark could not start: the service or its data is not ready."""


@dataclass(frozen=True)
class Load:
    """What the load generator does; pickled to its process."""

    base_url: str
    server_pids: tuple[int, ...]
    headers: dict[str, str]
    # (label, path template with {job}) requested in order at each poll.
    polls: tuple[tuple[str, str], ...]
    job_ids: tuple[str, ...]
    submit_body: dict[str, str] | None
    clients: int
    poll_interval: float
    submit_rate: float
    warmup: float
    seconds: float
    timeout: float
    # Event streams held open on the first job for the whole phase, and the events this
    # process writes to that job over the counted window before it ends the job.
    streams: int = 0
    stream_events: int = 0


class Row(TypedDict):
    endpoint: str
    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    first_error: str


class Stream(TypedDict):
    """What one event stream received: its events' ids in order, and how it ended."""

    ids: list[str]
    ended: bool
    error: str


class Phase(TypedDict):
    rows: list[Row]
    streams: list[Stream]
    client_cores: float
    server_cores: float
    machine_cores: float


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def add(self, seconds: float, error: str) -> None:
        self.latencies.append(seconds)
        if error:
            self.errors += 1
            self.first_error = self.first_error or error


# --- the load generator (runs in its own process) ---------------------------------


async def _timed(
    client: httpx.AsyncClient,
    tally: Tally,
    method: str,
    path: str,
    window: tuple[float, float],
    body: dict[str, str] | None = None,
) -> None:
    started = time.perf_counter()
    try:
        response = await client.request(method, path, json=body)
        error = "" if response.is_success else f"HTTP {response.status_code}: {response.text[:300]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finished = time.perf_counter()
    # Counted when in flight at any time in the window: one stuck since the warm-up counts too.
    if started < window[1] and finished >= window[0]:
        tally.add(finished - started, error)


async def _poller(
    client: httpx.AsyncClient, load: Load, index: int, window: tuple[float, float], tallies: dict[str, Tally]
) -> None:
    job = load.job_ids[index % len(load.job_ids)] if load.job_ids else ""
    paths = [(label, template.format(job=job)) for label, template in load.polls]
    # A random phase, so that the clients do not all poll in the same instant.
    next_at = time.perf_counter() + random.uniform(0, load.poll_interval)
    while next_at < window[1]:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        for label, path in paths:
            await _timed(client, tallies[label], "GET", path, window)
        next_at = max(next_at + load.poll_interval, time.perf_counter())


async def _submitter(
    client: httpx.AsyncClient, load: Load, body: dict[str, str], window: tuple[float, float], tally: Tally
) -> None:
    period, next_at = 1 / load.submit_rate, time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    while next_at < window[1]:
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        task = asyncio.create_task(_timed(client, tally, "POST", JOBS, window, body))
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += period
    await asyncio.gather(*pending)


async def _follow(client: httpx.AsyncClient, path: str, opened: asyncio.Event) -> Stream:
    """Read one event stream until its `event: end` (or an error, or the client's timeout
    without a byte, keep-alives included)."""
    text, error = "", ""
    try:
        async with client.stream("GET", path) as response:
            if not response.is_success:
                raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
            async for chunk in response.aiter_text():
                text += chunk
                opened.set()
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        opened.set()
    ids = [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]
    return Stream(ids=ids, ended="\nevent: end\n" in text, error=error)


async def _hold_streams(load: Load, ready: EventType) -> list[Stream]:
    """`load.streams` streams on the first job, a client (so a connection) each; `ready`
    is set once each has received its first bytes (the job's events so far)."""
    path = f"{JOBS}/{load.job_ids[0]}/events/stream"
    async with AsyncExitStack() as stack:
        tls, tasks, opened = ssl.create_default_context(), [], []
        for _ in range(load.streams):
            client = await stack.enter_async_context(_client(load, tls, 1))
            opened.append(asyncio.Event())
            tasks.append(asyncio.create_task(_follow(client, path, opened[-1])))
        await asyncio.gather(*(event.wait() for event in opened))
        ready.set()
        return list(await asyncio.gather(*tasks))


def hold_streams(load: Load, ready: EventType) -> list[Stream]:
    return asyncio.run(_hold_streams(load, ready))


def _write_event(job_id: str, number: int) -> None:
    from core.db import session_scope
    from core.events import add_event

    with session_scope() as session:
        add_event(session, job_id, f"bench event {number}")


def _end_job(job_id: str) -> None:
    from core.db import session_scope
    from core.jobs import transition
    from core.states import JobStatus

    with session_scope() as session:
        transition(session, job_id, JobStatus.FAILED, error={"code": "bench", "message": "ended", "param": None})


async def _worker(load: Load, window: tuple[float, float]) -> None:
    """What a worker does to the streamed job: events spread over the window, each in
    its own transaction, then the end of the job, which ends its streams."""
    job = load.job_ids[0]
    for number in range(load.stream_events):
        await asyncio.sleep(max(0.0, window[0] + number * load.seconds / load.stream_events - time.perf_counter()))
        await asyncio.to_thread(_write_event, job, number)
    await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
    await asyncio.to_thread(_end_job, job)


def _cpu_seconds(server_pids: tuple[int, ...]) -> tuple[float, float, float]:
    """CPU seconds used so far by this process, by the server processes and by the
    whole machine (every core, every process)."""
    tick = os.sysconf("SC_CLK_TCK")
    servers = 0
    for pid in server_pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        servers += int(fields[11]) + int(fields[12])  # utime and stime
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in stat.readline().split()[1:8])
    return time.process_time(), servers / tick, (user + nice + system + irq + softirq) / tick


async def _cpu_over(window: tuple[float, float], server_pids: tuple[int, ...]) -> tuple[float, ...]:
    """Cores busy over the window: the load generator, the servers, the machine."""
    await asyncio.sleep(window[0] - time.perf_counter())
    start = _cpu_seconds(server_pids)
    await asyncio.sleep(window[1] - time.perf_counter())
    end = _cpu_seconds(server_pids)
    return tuple((e - b) / (window[1] - window[0]) for b, e in zip(start, end, strict=True))


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else math.nan


def _row(label: str, tally: Tally, seconds: float) -> Row:
    ordered = sorted(tally.latencies)
    return Row(
        endpoint=label,
        requests=len(ordered),
        per_second=len(ordered) / seconds,
        p50_ms=_percentile(ordered, 0.50) * 1000,
        p99_ms=_percentile(ordered, 0.99) * 1000,
        errors=tally.errors,
        first_error=tally.first_error,
    )


def _client(load: Load, tls: ssl.SSLContext, max_connections: int | None) -> httpx.AsyncClient:
    # An idle connection is dropped after 4 s: uvicorn closes it after 5 s (timeout_keep_alive),
    # and a request sent on it just then fails (the submitter, at one POST every 5 s, did).
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections, keepalive_expiry=4.0
    )
    return httpx.AsyncClient(
        base_url=load.base_url, headers=load.headers, timeout=load.timeout, limits=limits, verify=tls
    )


async def _drive(load: Load) -> Phase:
    tallies: dict[str, Tally] = defaultdict(Tally)
    # A client, so a connection, per poller, as 200 real clients would have: one httpx
    # pool shared by 200 tasks spends CPU per request that grows with its connections
    # (5.7 ms a request at 200 against 1.1 ms with a client each, on this machine). One
    # TLS context for all, though unused on http: each client would load the CA store.
    tls = ssl.create_default_context()
    async with AsyncExitStack() as stack:
        pollers = [await stack.enter_async_context(_client(load, tls, 1)) for _ in range(load.clients)]
        # Unbounded: submissions are open loop, slow answers must not hold later ones back.
        submitter = await stack.enter_async_context(_client(load, tls, None))
        start = time.perf_counter()
        window = (start + load.warmup, start + load.warmup + load.seconds)
        tasks = [asyncio.create_task(_poller(c, load, i, window, tallies)) for i, c in enumerate(pollers)]
        if load.stream_events:
            tasks.append(asyncio.create_task(_worker(load, window)))
        if load.submit_body is not None:
            tasks.append(asyncio.create_task(_submitter(submitter, load, load.submit_body, window, tallies[SUBMIT])))
        client_cores, server_cores, machine_cores = await _cpu_over(window, load.server_pids)
        await asyncio.gather(*tasks)
    rows = [_row(label, tallies[label], load.seconds) for label, _ in dict.fromkeys(load.polls)]
    if load.submit_body is not None:
        rows.append(_row(SUBMIT, tallies[SUBMIT], load.seconds))
    return Phase(
        rows=rows, streams=[], client_cores=client_cores, server_cores=server_cores, machine_cores=machine_cores
    )


def drive(load: Load) -> Phase:
    return asyncio.run(_drive(load))


def run_phase(load: Load) -> Phase:
    """The load from a fresh process, so it does not share this one's interpreter; the
    streams, if any, from another one, opened before the load starts, so that reading
    them does not delay the timed requests in the same event loop."""
    context = get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool, context.Manager() as manager:
        ready = manager.Event()
        streams = pool.submit(hold_streams, load, ready) if load.streams else None
        while streams is not None and not ready.wait(1):
            if streams.done():
                streams.result()  # raises what stopped it
                raise SetupError("the event streams ended before the load started")
        phase = pool.submit(drive, load).result()
        return phase | {"streams": streams.result() if streams else []}


# --- the service and the baseline server ---------------------------------------------


def configure(data_dir: Path) -> None:
    """The environment of this process and of the servers it starts (read once per process)."""
    os.environ.update(
        FTSVC_DATA_DIR=str(data_dir),
        FTSVC_DATABASE_URL=DATABASE_URL,
        FTSVC_BROKER_URL=BROKER_URL,
        FTSVC_KEY_PEPPER="bench-pepper-not-for-production",
        # Every submission stays queued: the quota of active jobs must refuse none.
        FTSVC_MAX_ACTIVE_JOBS_PER_ORG="1000000",
        FTSVC_ALLOW_HUB_MODELS="false",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )


def _admin_sql(statements: list[str]) -> None:
    import sqlalchemy as sa

    url = sa.make_url(DATABASE_URL)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(db=url.database)))
    admin.dispose()


def _flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


def prepare_service() -> tuple[str, str]:
    """A fresh database and broker db, the tiny model, an organization; returns the
    model's name and the organization's API key."""
    from core.auth import create_key, create_organization
    from core.db import get_engine, session_scope
    from core.migrate import upgrade_database
    from core.settings import get_settings
    from worker.tiny_model import ensure_tiny_llama

    _admin_sql(['DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', 'CREATE DATABASE "{db}"'])
    upgrade_database()
    _flush_broker()
    model = ensure_tiny_llama(get_settings().models_root).name
    with session_scope() as session:
        org = create_organization(session, "bench")
        key = create_key(session, org.id)[1]
    get_engine().dispose()
    return model, key


def cleanup_service() -> None:
    _admin_sql(['DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'])
    _flush_broker()


def _listener() -> socket.socket:
    """The listening socket all server processes of one server share.

    Made here rather than by `uvicorn --workers`: uvicorn creates it with protocol 0, and
    asyncio only enables TCP_NODELAY on connections accepted from a listener that says
    IPPROTO_TCP, so with Nagle on every keep-alive request waits ~40 ms for the client's
    delayed ACK (uvicorn issue #3149).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _serve_one(app: str, factory: bool, sock: socket.socket, log: Path) -> None:
    """One server process, as each of `uvicorn --workers` runs: same Config defaults."""
    import uvicorn

    with log.open("ab") as out:
        os.dup2(out.fileno(), sys.stdout.fileno())
        os.dup2(out.fileno(), sys.stderr.fileno())
    # No access log: neither server should spend its CPU on writing one line a request.
    config = uvicorn.Config(app, factory=factory, access_log=False, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def _wait_ready(processes: list[BaseProcess], url: str, log: Path, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if any(p.exitcode is not None for p in processes):
            raise SetupError(f"a server process exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1).is_success:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    raise SetupError(f"the server did not answer {url} within {deadline_s:.0f}s:\n{log.read_text()[-3000:]}")


def _stop(process: BaseProcess) -> None:
    process.terminate()
    process.join(15)
    if process.exitcode is None:
        process.kill()
        process.join()


@contextmanager
def serving(app: str, factory: bool, workers: int, ready_path: str, log: Path) -> Iterator[Server]:
    """`workers` uvicorn server processes on one socket, stopped on exit."""
    sock, started = _listener(), []
    try:
        for _ in range(workers):
            process = get_context("spawn").Process(target=_serve_one, args=(app, factory, sock, log))
            process.start()
            started.append(process)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        _wait_ready(started, url + ready_path, log)
        yield Server(url, tuple(p.pid for p in started if p.pid is not None))
    finally:
        for process in started:
            _stop(process)
        sock.close()


def seed(url: str, key: str, model: str, jobs: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """Upload examples/chat.jsonl and submit `jobs` jobs; returns the job body and their ids."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        data = (ROOT / "examples" / "chat.jsonl").read_bytes()
        upload = client.post("/v1/files", files={"file": ("chat.jsonl", data)}, data={"purpose": "fine-tune"})
        if not upload.is_success:
            raise SetupError(f"upload failed: HTTP {upload.status_code}: {upload.text}")
        body = {"model": model, "training_file": upload.json()["id"]}
        ids = []
        for _ in range(jobs):
            # A connection each: the kernel spreads them over the server's processes, so
            # every process loads the tokenizer for its first submission here, not in the
            # counted window (one process's cold load there costs seconds of its CPU).
            job = client.post(JOBS, json=body, headers={"Connection": "close"})
            if not job.is_success:
                raise SetupError(f"job submission failed: HTTP {job.status_code}: {job.text}")
            ids.append(job.json()["id"])
    return body, tuple(ids)


# --- the report ----------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.1f}"


def print_report(bare: Phase, ours: Phase) -> None:
    """The table, the ratios and whether the target was met."""
    print("\n| endpoint | requests | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    for row in bare["rows"] + ours["rows"]:
        print(
            f"| {row['endpoint']} | {row['requests']:,} | {row['per_second']:,.1f} | {_ms(row['p50_ms'])} "
            f"| {_ms(row['p99_ms'])} | {row['errors']} |"
        )
    cores = os.cpu_count() or 1
    for name, phase in (("bare", bare), ("ours", ours)):
        other = phase["machine_cores"] - phase["client_cores"] - phase["server_cores"]
        print(
            f"\n{name}: cores busy: load generator {phase['client_cores']:.2f}, server processes "
            f"{phase['server_cores']:.2f}, the rest (Postgres, Redis, anything else) {other:.2f}; "
            f"machine {phase['machine_cores']:.2f} of {cores}"
        )
        for row in phase["rows"]:
            if row["errors"]:
                print(f"  first error of {row['endpoint']}: {row['first_error']}")
    rows = {row["endpoint"]: row for row in ours["rows"]}
    base = bare["rows"][0]
    polls_per_second = rows[STATUS]["per_second"] + rows[EVENTS]["per_second"]
    print(
        f"\noverhead: status p99 {rows[STATUS]['p99_ms'] / base['p99_ms']:.1f}x the bare endpoint's, "
        f"events p99 {rows[EVENTS]['p99_ms'] / base['p99_ms']:.1f}x; polls served at "
        f"{polls_per_second / base['per_second']:.2f}x the bare endpoint's rate "
        f"({polls_per_second:,.1f} against {base['per_second']:,.1f} req/s)"
    )
    errors = sum(row["errors"] for row in ours["rows"])
    met = errors == 0 and rows[STATUS]["p99_ms"] < TARGET_P99_MS
    print(
        f"target (zero errors, status p99 < {TARGET_P99_MS:.0f} ms): {'met' if met else 'NOT met'} "
        f"({errors} errors, status p99 {_ms(rows[STATUS]['p99_ms'])} ms)"
    )


def print_streams_report(bare: Phase, streamed: Phase, expected: list[str]) -> None:
    """The status polls while the streams were open, and what the streams received."""
    row, base, streams = streamed["rows"][0], bare["rows"][0], streamed["streams"]
    print(
        f"\n{len(streams):,} event streams open on one job, {STREAM_POLLERS} status polls/s:\n"
        "| endpoint | requests | req/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|\n"
        f"| {row['endpoint']} | {row['requests']:,} | {row['per_second']:,.1f} | {_ms(row['p50_ms'])} "
        f"| {_ms(row['p99_ms'])} | {row['errors']} |"
    )
    other = streamed["machine_cores"] - streamed["client_cores"] - streamed["server_cores"]
    print(
        f"cores busy: load generator {streamed['client_cores']:.2f}, server processes "
        f"{streamed['server_cores']:.2f}, the rest {other:.2f}; status p99 {row['p99_ms'] / base['p99_ms']:.1f}x "
        f"the bare endpoint's (measured at {base['per_second']:,.1f} req/s)"
    )
    complete = sum(s["ids"] == expected and s["ended"] and not s["error"] for s in streams)
    errors = [s["error"] for s in streams if s["error"]]
    print(
        f"streams: {sum(s['ended'] for s in streams):,} of {len(streams):,} ended with `event: end`, "
        f"{complete:,} received all {len(expected)} events of the job in order; {len(errors)} errors"
        + (f" (first: {errors[0]})" if errors else "")
    )
    met = complete == len(streams) and row["errors"] == 0 and row["p99_ms"] < TARGET_P99_MS
    print(
        f"target (every stream complete, status p99 < {TARGET_P99_MS:.0f} ms with the streams open): "
        f"{'met' if met else 'NOT met'}"
    )


def print_logged_errors(log: Path) -> None:
    """The exceptions a server logged, warm-up included (the counted rows leave it out),
    by how often each was raised; the log holds their tracebacks."""
    raised = Counter(line for line in log.read_text().splitlines() if EXCEPTION_LINE.match(line))
    if raised:
        print(f"\nexceptions logged by {log.stem} ({log}):")
        for line, count in raised.most_common():
            print(f"  {count} x {line[:300]}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="counted duration of each phase")
    parser.add_argument(
        "--code",
        type=Path,
        default=ROOT,
        help="the checkout whose API is served (an earlier one, a git worktree, for a before/after pair)",
    )
    parser.add_argument("--warmup", type=float, default=10, help="uncounted load before it (imports, pools)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent pollers")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between one client's polls")
    parser.add_argument("--submit-rate", type=float, default=20, help="job submissions per second")
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn processes of each server")
    parser.add_argument("--jobs", type=int, default=20, help="jobs seeded for the pollers to follow")
    parser.add_argument("--timeout", type=float, default=30, help="client timeout per request, in seconds")
    parser.add_argument("--streams", type=int, default=1000, help="event streams held open on one job (0: skip)")
    parser.add_argument("--stream-events", type=int, default=30, help="events written to that job meanwhile")
    return parser.parse_args()


def make_load(
    args: argparse.Namespace,
    server: Server,
    polls: tuple[tuple[str, str], ...],
    key: str = "",
    job_ids: tuple[str, ...] = (),
    submit_body: dict[str, str] | None = None,
) -> Load:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return Load(
        server.url,
        server.pids,
        headers,
        polls,
        job_ids,
        submit_body,
        args.clients,
        args.poll_interval,
        args.submit_rate,
        args.warmup,
        args.seconds,
        args.timeout,
    )


def streams_load(args: argparse.Namespace, server: Server, key: str, job_id: str) -> Load:
    """`--streams` streams on one job, while STREAM_POLLERS poll its status once a second."""
    polls = ((STREAMING_STATUS, f"{JOBS}/{{job}}"),)
    load = make_load(args, server, polls, key, (job_id,))
    return replace(
        load, clients=STREAM_POLLERS, poll_interval=1.0, streams=args.streams, stream_events=args.stream_events
    )


def job_event_ids(job_id: str) -> list[str]:
    """Every event id of the job, oldest first: what each of its streams must have received."""
    from core.db import session_scope
    from core.events import events_after

    with session_scope() as session:
        return [e.id for e in events_after(session, job_id, 0, limit=1_000_000)]


def main() -> None:
    args = parse_args()
    # The server processes import the apps by name, `bench.api_load:bare_app` included,
    # from the checkout under test (spawned processes start with this process's path).
    sys.path.insert(0, str(args.code.resolve()))
    data_dir = Path(tempfile.mkdtemp(prefix="ftsvc-api-load-"))
    bare_log, api_log = data_dir / "bare.log", data_dir / "api.log"
    configure(data_dir)
    print(
        f"servers: uvicorn, {args.api_workers} processes on one socket each, no access log; service on Postgres "
        f"(ftsvc_bench) and Redis db 14, no Celery worker (jobs stay validating_files); logs in {data_dir}\n"
        f"load: {args.clients} pollers every {args.poll_interval:g}s (GET job, GET events), "
        f"{args.submit_rate:g} submissions/s; {args.warmup:g}s warm-up + {args.seconds:g}s counted per phase"
    )
    streamed: tuple[Phase, list[str]] | None = None
    try:
        model, key = prepare_service()
        with serving("bench.api_load:bare_app", False, args.api_workers, "/constant", bare_log) as server:
            bare = run_phase(make_load(args, server, ((BARE, "/constant"),) * 2))
        with serving("api.app:create_app", True, args.api_workers, "/healthz", api_log) as server:
            body, job_ids = seed(server.url, key, model, args.jobs)
            polls = ((STATUS, f"{JOBS}/{{job}}"), (EVENTS, f"{JOBS}/{{job}}/events"))
            ours = run_phase(make_load(args, server, polls, key, job_ids, body))
            if args.streams:
                streamed = run_phase(streams_load(args, server, key, job_ids[0])), job_event_ids(job_ids[0])
    except SetupError as exc:
        sys.exit(f"setup failed: {exc}")
    finally:
        cleanup_service()
    print_report(bare, ours)
    if streamed is not None:
        print_streams_report(bare, *streamed)
    for log in (bare_log, api_log):
        print_logged_errors(log)


if __name__ == "__main__":
    main()
