"""When this process began work on its job: the origin of the start-up times a job
reports (model loaded, first step). A process started for its job begins at import; a
standby process, started ahead with its imports done, begins when it is handed the job."""

from __future__ import annotations

import time

_started = time.monotonic()


def mark_started() -> None:
    global _started
    _started = time.monotonic()


def seconds() -> float:
    """Seconds since this process began work on its job."""
    return time.monotonic() - _started
