"""Server-Sent Events of a job's events. A plain generator: Starlette runs it in a
thread, and each poll uses a short database session so a stream holds no connection."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from api.schemas import JobEventObject
from core import events
from core.db import session_scope
from core.models import JobEvent
from core.settings import get_settings
from core.states import TERMINAL

# Comment lines keep proxies from closing a quiet stream.
KEEPALIVE_SECONDS = 15.0


def _sse(event: JobEvent) -> str:
    """One event as a Server-Sent Event: its data is the event object of the events list."""
    return f"id: {event.id}\nevent: {event.type}\ndata: {JobEventObject.from_row(event).model_dump_json()}\n\n"


def job_event_stream(job_id: str, last_event_id: str | None) -> Iterator[str]:
    """The job's events after `last_event_id` (one of this job's; any other id: from the
    first), then each new one as it comes, ending with `event: end` once the job ended."""
    poll = get_settings().event_poll_seconds
    with session_scope() as session:
        position = events.event_position(session, job_id, last_event_id)
    quiet = 0.0
    while True:
        with session_scope() as session:
            status, batch = events.poll_stream(session, job_id, position)
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
