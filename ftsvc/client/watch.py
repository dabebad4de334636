"""`ftsvc jobs watch`: a job followed until it ends. The job's Server-Sent Events
(/events/stream, read in a thread, resumed with Last-Event-ID when the connection breaks)
bring its log and its metrics points; the job itself is polled every second for its
status, step and ETA. On a terminal a live view redraws in place (status, a progress
bar of the steps, ETA, the latest train and validation loss, tokens/s, the newest
events); on a pipe each event is one line. The command's exit code is the job's outcome."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from httpx_sse import EventSource, SSEError
from rich.console import Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ftsvc.client.api import Api, endpoint
from ftsvc.client.errors import EXIT_JOB_CANCELLED, EXIT_JOB_FAILED, JobEnded, Unreachable
from ftsvc.client.output import clock, figure, out

TERMINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 1.0
REFRESH_SECONDS = 0.25
RECONNECT_SECONDS = 1.0
# How long the server may be away (restarting, say) before the watch gives up.
GIVE_UP_SECONDS = 30.0
# A job found over whose stream has not said `end` by then (a stream that keeps
# breaking): the watch ends on the job's status alone.
END_GRACE_SECONDS = 10.0
END = object()


class EventFeed(threading.Thread):
    """The job's events as they come, into a queue: event objects, then END (or what
    stopped the stream otherwise: an ApiError refusing it). A broken connection is resumed after the last
    event received."""

    def __init__(self, api: Api, job_id: str) -> None:
        super().__init__(name=f"events of {job_id}", daemon=True)
        # A client of its own: the main thread polls with the other one meanwhile.
        self.api = Api(api.connection)
        self.path = endpoint("fine_tuning", "jobs", job_id, "events", "stream")
        self.items: queue.Queue[Any] = queue.Queue()
        self.stopping = threading.Event()
        self.last_id: str | None = None

    def run(self) -> None:
        with self.api:
            while not self.stopping.is_set():
                try:
                    if self.follow():
                        self.items.put(END)
                        return
                except (Unreachable, SSEError):
                    pass  # the main thread's polls tell whether the server is really gone
                except Exception as failure:  # a refusal (ApiError) or a bug: the main thread raises it
                    self.items.put(failure)
                    return
                self.stopping.wait(RECONNECT_SECONDS)

    def follow(self) -> bool:
        """Read the stream from after the last event received; True when it ended."""
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        with self.api.stream(self.path, headers=headers) as response:
            for sse in EventSource(response).iter_sse():
                if self.stopping.is_set():
                    return False
                if sse.event == "end":
                    return True
                if not sse.data:  # a keep-alive comment, which httpx-sse hands on with the last id
                    continue
                self.last_id = sse.id or self.last_id
                self.items.put(json.loads(sse.data))
        return False

    def arrived(self, timeout: float) -> list[Any]:
        """What came within `timeout` (everything queued, once something is)."""
        try:
            found = [self.items.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.items.empty():
            found.append(self.items.get_nowait())
        return found


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class JobView:
    """What the watch knows of the job, and how it is shown."""

    def __init__(self, job: dict[str, Any], tail: int) -> None:
        self.job = job
        self.events: deque[dict[str, Any]] = deque(maxlen=tail)
        self.latest: dict[str, dict[str, Any]] = {}  # split -> its newest metrics point

    def add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        data = event.get("data") or {}
        if event.get("type") == "metrics" and "step" in data:
            self.latest[data.get("split", "train")] = data

    @property
    def status(self) -> str:
        return str(self.job["status"])

    def status_text(self) -> str:
        job, status = self.job, self.status
        if status == "queued" and job.get("queue_position"):
            return f"queued (position {job['queue_position']} in the queue)"
        if status == "running" and job.get("pause_requested"):
            return "running (pausing after this step)"
        if status == "failed" and job.get("error"):
            return f"failed: {job['error']['message']}"
        return status

    def eta(self) -> str:
        finish = self.job.get("estimated_finish")
        if finish and self.status == "running":
            return f"{duration(finish - time.time())} (at {clock(finish)})"
        if self.job.get("finished_at"):
            return f"finished at {clock(self.job['finished_at'])}"
        return "-"

    def loss(self) -> str:
        parts = [
            f"{name} {figure(point.get('loss'))} (step {point['step']})"
            for name, point in (("train", self.latest.get("train")), ("validation", self.latest.get("valid")))
            if point is not None
        ]
        return "   ".join(parts) or "-"

    def speed(self) -> str:
        train = self.latest.get("train") or {}
        rate = train.get("tokens_per_second")
        return f"{rate:,.0f} tokens/s" if rate else "-"

    def steps(self) -> RenderableType:
        progress = self.job.get("progress")
        if not progress:
            return "-"
        # The job's progress is written every 2 s; the stream's newest step may be ahead.
        streamed = (self.latest.get("train") or {}).get("step", 0)
        step, total = max(progress["step"], streamed), max(progress["total_steps"], 1)
        row = Table.grid(padding=(0, 2))
        row.add_row(
            ProgressBar(total=total, completed=min(step, total), width=40),
            f"{step}/{total} steps  {100 * step // total}%  ({progress['epochs']} epochs)",
        )
        return row

    def facts(self, expand: bool = True) -> Panel:
        job = self.job
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("job", f"{job['id']}  {job.get('fine_tuned_model') or job['model']}")
        grid.add_row("status", self.status_text())
        grid.add_row("progress", self.steps())
        grid.add_row("ETA", self.eta())
        grid.add_row("loss", self.loss())
        grid.add_row("speed", self.speed())
        return Panel(grid, title="fine-tuning job", title_align="left", expand=expand)

    def render(self) -> RenderableType:
        log = (
            Text.assemble((clock(e["created_at"]), "dim"), "  ", e["message"], no_wrap=True, overflow="ellipsis")
            for e in self.events
        )
        return Group(self.facts(), Panel(Group(*log), title="events"))


@contextmanager
def display(view: JobView) -> Iterator[None]:
    """The live view on a terminal; on a pipe, nothing redraws (events print as lines,
    and the facts once at the end)."""
    if not out.is_terminal:
        yield
        out.print(view.facts(expand=False))
        return
    with Live(get_renderable=view.render, console=out, refresh_per_second=1 / REFRESH_SECONDS):
        yield


class Poll:
    """The job, polled; a server away for GIVE_UP_SECONDS ends the watch."""

    def __init__(self, api: Api, job_id: str) -> None:
        self.api, self.path = api, endpoint("fine_tuning", "jobs", job_id)
        self.away_since: float | None = None
        self.due = 0.0

    def job(self) -> dict[str, Any] | None:
        self.due = time.monotonic() + POLL_SECONDS
        try:
            job: dict[str, Any] = self.api.get(self.path)
        except Unreachable:
            self.away_since = self.away_since or time.monotonic()
            if time.monotonic() - self.away_since > GIVE_UP_SECONDS:
                raise
            return None
        self.away_since = None
        return job


def watch(api: Api, job_id: str, tail: int) -> dict[str, Any]:
    """Follow the job until it ends; returns it if it succeeded, raises JobEnded if not."""
    poll = Poll(api, job_id)
    view = JobView(api.get(poll.path), tail)  # an unknown job or a refused key fails here, at once
    feed = EventFeed(api, job_id)
    feed.start()
    stream_ended, over_since = False, None
    try:
        with display(view):
            while not (stream_ended and view.status in TERMINAL):
                for item in feed.arrived(timeout=REFRESH_SECONDS):
                    if isinstance(item, Exception):
                        raise item
                    if item is END:
                        stream_ended = True
                    else:
                        view.add(item)
                        if not out.is_terminal:
                            out.print(f"{clock(item['created_at'])}  {item['message']}", soft_wrap=True)
                if stream_ended or time.monotonic() >= poll.due:
                    view.job = poll.job() or view.job
                if view.status in TERMINAL:
                    over_since = over_since or time.monotonic()
                    if time.monotonic() - over_since > END_GRACE_SECONDS:
                        break
    finally:
        feed.stopping.set()
    return outcome(view.job)


def outcome(job: dict[str, Any]) -> dict[str, Any]:
    status = job["status"]
    if status == "failed":
        error = job.get("error") or {}
        raise JobEnded(f"job {job['id']} failed: {error.get('message')} ({error.get('code')})", EXIT_JOB_FAILED)
    if status == "cancelled":
        raise JobEnded(f"job {job['id']} was cancelled", EXIT_JOB_CANCELLED)
    return job
