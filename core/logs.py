"""How every process of the service logs: one line per record on stderr, as text or as
JSON (`FTSVC_LOG_FORMAT`), with the id of the job or merge a line belongs to.

The ids come from two places. A job's (or merge's) own process belongs to that job as a
whole, every thread of it included (the lease heartbeat, the trainer's): `configure` is
told its id once. A process serving many (a Celery worker's task threads) binds an id for
a stretch of work with `bound`, a context variable, so concurrent tasks keep theirs apart.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from core.settings import get_settings

# The ids a log line can carry, under these names (JSON keys, `name=value` in text).
CONTEXT_FIELDS = ("job_id", "merge_id", "evaluation_id")
LogFormat = Literal["text", "json"]

_bound: ContextVar[dict[str, str] | None] = ContextVar("ftsvc_log_context", default=None)
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class ContextFilter(logging.Filter):
    """Puts the ids on each record that passes the handler: this process's, then the ones
    bound in the current context (a record's own `extra` wins over both)."""

    def __init__(self, fixed: dict[str, str]) -> None:
        super().__init__()
        self._fixed = fixed

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (self._fixed | (_bound.get() or {})).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with the line's ids after its message (before any traceback)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name))
        line = super().formatMessage(record)
        return f"{line} [{ids}]" if ids else line


def formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        # One object per line: time, level, logger, message, the ids, and any `extra`.
        return JsonFormatter(
            TEXT_FORMAT,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
    return TextFormatter(TEXT_FORMAT)


def configure(level: int = logging.INFO, **fixed: str) -> None:
    """Replace the root logger's handlers with one on stderr in the configured format;
    `fixed`: ids every line of this process carries (a job process's `job_id`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(get_settings().log_format))
    handler.addFilter(ContextFilter(fixed))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries' warnings.warn (transformers', torch's) become log lines with the ids too.
    logging.captureWarnings(True)


class LineLogger(io.TextIOBase):
    """A text stream whose every line becomes a log record: what libraries print (the
    Trainer's step summaries, a thread's traceback) reaches the log in its format, with
    the ids, instead of as stray text between the records."""

    encoding = "utf-8"  # read by libraries that print (TextIOBase's is None)

    def __init__(self, logger: logging.Logger, level: int, fallback: TextIO | None = None) -> None:
        super().__init__()
        self._logger, self._level = logger, level
        self._pending = ""
        self._lock = threading.RLock()
        self._writing = threading.local()
        self._fallback = fallback

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The real stream's descriptor, for libraries that want one (faulthandler); what
        they write to it directly bypasses the log."""
        if self._fallback is None:
            raise io.UnsupportedOperation("fileno")
        return self._fallback.fileno()

    def write(self, text: str) -> int:
        if getattr(self._writing, "active", False):  # the logging machinery itself printing
            if self._fallback is not None:
                self._fallback.write(text)
            return len(text)
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        self._writing.active = True
        try:
            for line in lines:
                # A progress bar's carriage returns: only what it drew last is kept.
                if line := line.rsplit("\r", 1)[-1].rstrip():
                    self._logger.log(self._level, line)
        finally:
            self._writing.active = False
        return len(text)


def capture_output() -> None:
    """Turn this process's prints into log lines (stdout at INFO, stderr at WARNING)."""
    original = sys.__stderr__
    sys.stdout = LineLogger(logging.getLogger("ftsvc.stdout"), logging.INFO, original)
    sys.stderr = LineLogger(logging.getLogger("ftsvc.stderr"), logging.WARNING, original)


@contextmanager
def bound(**ids: str) -> Iterator[None]:
    """Every line logged in this context (this thread or task) carries `ids`."""
    token = _bound.set((_bound.get() or {}) | ids)
    try:
        yield
    finally:
        _bound.reset(token)
