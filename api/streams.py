"""Server-Sent Events of a job's events, for any number of open streams at the cost of
one poll per interval per API process.

A stream is an async generator: while it waits it holds neither a worker thread nor a
database connection, only a queue. One poller per process (`EventHub`, on the event
loop that serves the streams) reads, every `event_poll_seconds`, the statuses and new
events of every job that has streams open, in one short read in a worker thread, formats
each event once and hands the text to every stream of its job. A stream that joins a job
whose feed has already read further than the stream's start reads that part itself,
once, then follows the feed. Postgres LISTEN/NOTIFY would save the empty polls, but needs
a connection held per process and a fallback for SQLite anyway; one poll per interval
for all streams is already independent of their number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from api.schemas import JobEventObject
from core import events, jobs
from core.db import read_scope
from core.models import JobEvent
from core.settings import get_settings
from core.states import TERMINAL

log = logging.getLogger(__name__)

# Comment lines keep proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0
# Events read per query; a poll that reads this many reads again at once.
BATCH = 500


def _sse(event: JobEvent) -> str:
    """One event as a Server-Sent Event: its data is the event object of the events list."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {JobEventObject.from_row(event).model_dump_json()}\n\n"


@dataclass(frozen=True)
class Batch:
    """What one poll read for one job: its events as (position, Server-Sent Event) and its
    status, None when the poll may have left some of its events for the next one."""

    status: str | None
    events: list[tuple[int, str]]


@dataclass
class _Feed:
    """The streams of one job, and how far the poller has read its events."""

    position: int
    streams: set[asyncio.Queue[Batch]] = field(default_factory=set)


def _poll(positions: dict[str, int]) -> tuple[dict[str, str], list[tuple[str, int, str]], bool]:
    """One read for all feeds (in a worker thread): statuses, (job, position, event) in
    order, and whether every new event was read."""
    with read_scope() as session:
        statuses, rows = events.poll_feeds(session, positions, BATCH)
        return statuses, [(e.job_id, e.pk, _sse(e)) for e in rows], len(rows) < BATCH


def _events_after(job_id: str, position: int) -> list[tuple[int, str]]:
    with read_scope() as session:
        return [(e.pk, _sse(e)) for e in events.events_after(session, job_id, position, BATCH)]


class EventHub:
    """The feeds of one event loop's streams and their poller, which runs while any
    stream is open."""

    def __init__(self) -> None:
        self._feeds: dict[str, _Feed] = {}
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    def subscribe(self, job_id: str, position: int) -> tuple[asyncio.Queue[Batch], int]:
        """A queue that receives every batch the poller reads for the job from now on,
        and the position the feed has read up to (the stream reads what lies between
        its own start and there itself)."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed(position)
            self._wake.set()  # a new job to read: no need to wait for the next interval
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        feed.streams.add(queue)
        if self._poller is None:
            self._poller = asyncio.create_task(self._run())
        return queue, feed.position

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[Batch]) -> None:
        feed = self._feeds[job_id]
        feed.streams.discard(queue)
        if not feed.streams:
            del self._feeds[job_id]
            self._wake.set()  # the poller stops at once when it was the last

    def streams(self, job_id: str) -> int:
        """How many streams of this process follow the job."""
        feed = self._feeds.get(job_id)
        return len(feed.streams) if feed else 0

    async def _run(self) -> None:
        try:
            while self._feeds:
                read_all = await self._poll_once()
                if read_all:
                    try:
                        await asyncio.wait_for(self._wake.wait(), get_settings().event_poll_seconds)
                    except TimeoutError:
                        pass
                    self._wake.clear()
        finally:
            self._poller = None

    async def _poll_once(self) -> bool:
        positions = {job_id: feed.position for job_id, feed in self._feeds.items()}
        try:
            statuses, rows, read_all = await run_in_threadpool(_poll, positions)
        except Exception:
            # The database is away: the streams wait (with their keep-alives) and the
            # next poll tries again.
            log.exception("polling the events of %d jobs failed", len(positions))
            return True
        new: dict[str, list[tuple[int, str]]] = {job_id: [] for job_id in positions}
        for job_id, pk, text in rows:
            new[job_id].append((pk, text))
        for job_id, batch in new.items():
            feed = self._feeds.get(job_id)
            status = statuses.get(job_id) if read_all else None
            if feed is None or not (batch or status in TERMINAL):
                continue  # nothing for its streams to do: do not wake them
            feed.position = max(feed.position, batch[-1][0]) if batch else feed.position
            for queue in feed.streams:
                queue.put_nowait(Batch(status, batch))
        return read_all


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, EventHub] = weakref.WeakKeyDictionary()


def event_hub() -> EventHub:
    """The hub of the running event loop (one per API process; tests run several loops)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
    return hub


def stream_start(org_id: str, job_id: str, last_event_id: str | None) -> int:
    """The position a stream of the organization's job starts after (404 for another's
    job): that of `last_event_id` when it is one of the job's events, else 0."""
    with read_scope() as session:
        jobs.get_job(session, org_id, job_id)
        return events.event_position(session, job_id, last_event_id)


async def job_event_stream(job_id: str, position: int) -> AsyncIterator[str]:
    """The job's events after `position`, oldest first, then each new one as it comes,
    ending with `event: end` once the job is over and a poll found nothing more. A
    client that goes away cancels the generator, which leaves its feed."""
    hub = event_hub()
    queue, feed_position = hub.subscribe(job_id, position)
    try:
        while position < feed_position:  # what the feed read before this stream joined
            backlog = await run_in_threadpool(_events_after, job_id, position)
            if not backlog:
                break
            position = backlog[-1][0]
            yield "".join(text for _, text in backlog)
        while True:
            try:
                batch = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            unseen = [(pk, text) for pk, text in batch.events if pk > position]
            if unseen:
                position = unseen[-1][0]
                yield "".join(text for _, text in unseen)
            elif batch.status in TERMINAL:
                yield f"event: end\ndata: {json.dumps({'status': batch.status})}\n\n"
                return
    finally:
        hub.unsubscribe(job_id, queue)
