"""Server-Sent Events of a job's events. A plain generator: Starlette runs it in a
thread, and each poll uses a short database session so a stream holds no connection."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from sqlalchemy import select

from api.schemas import JobEventObject
from core.db import session_scope
from core.events import events_after
from core.models import Job, JobEvent
from core.settings import get_settings
from core.states import TERMINAL

# Comment lines keep proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


def _sse(event: JobEvent) -> str:
    """One event as a Server-Sent Event: its data is the event object of the events list."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {JobEventObject.from_row(event).model_dump_json()}\n\n"


def job_event_stream(job_id: str, last_event_id: str | None) -> Iterator[str]:
    poll = get_settings().event_poll_seconds
    with session_scope() as session:
        position = (
            (session.scalar(select(JobEvent.pk).where(JobEvent.id == last_event_id)) or 0) if last_event_id else 0
        )
    quiet = 0.0
    while True:
        with session_scope() as session:
            # Read the status before the events: if the job was already over, the events
            # read next include its last one, so nothing is missed at the end.
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            batch = events_after(session, job_id, position)
            lines = [_sse(e) for e in batch]
            position = batch[-1].pk if batch else position
        yield from lines
        if status in TERMINAL and not batch:
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
            return
        if not batch:
            time.sleep(poll)
            quiet += poll
            if quiet >= KEEPALIVE_SECONDS:
                quiet = 0.0
                yield ": keep-alive\n\n"
        else:
            quiet = 0.0
