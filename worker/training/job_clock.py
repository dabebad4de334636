"""When this process began work on its job: the origin of the start-up times a job
reports (model loaded, first step). A process started for its job begins at import; a
standby process, started ahead with its imports done, begins when it is handed the job."""

from __future__ import annotations

import time

_started = time.monotonic()
_handed_over = False


def mark_started() -> None:
    """Called by a standby process when it is handed its job."""
    global _started, _handed_over
    _started, _handed_over = time.monotonic(), True


def handed_over() -> bool:
    """Whether this process was a standby, started before it was handed its job."""
    return _handed_over


def seconds() -> float:
    """Seconds since this process began work on its job."""
    return time.monotonic() - _started
