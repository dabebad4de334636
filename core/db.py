"""Engine and sessions: one engine per process, built from the settings.

The rule for commits, followed by every module of core:

- A function that takes a `Session` never commits, rolls back or closes it. It adds,
  flushes (when it needs ids or wants constraint errors early) and queries; its caller's
  unit of work commits once at the end: `session_scope()` below, or the API's request
  session (api.deps), which is a `session_scope()` that ends when the route returns.
- A function whose effect outside the database must follow a commit takes no session
  and opens its own `session_scope()` for each step, and its docstring says that it
  commits: a job's message is published only after the job's row is committed
  (`core.job_creation.submit_job`, `core.jobs.publish`, `core.jobs.resume_job`), bytes are
  deleted only after their row is gone (`core.files.delete_file`), stored bytes are
  removed if their row could not be committed (`core.files.ingest_upload`), and an
  Idempotency-Key is claimed where concurrent requests can see it.
- A request that only reads uses `read_scope()`: no transaction, so no BEGIN and no
  COMMIT round trips; each query sees what was committed when it ran.
- Workers and the maintenance loop open one `session_scope()` per step they report, so
  the API sees each event, metric and checkpoint as soon as it happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The API and the worker write the same file: WAL lets readers proceed while one
    # writes, and the busy timeout makes writers wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # 20 kept: a connection beyond pool_size is closed when it is returned, so a burst of
    # polls above it opened a new connection (a Postgres backend) per request (seen in a
    # profile under bench/api_load.py); the total per process stays at 30 as before.
    return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=10)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.database_url)


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def _refuse_writes(session: Session, _context: Any, _instances: Any) -> None:
    raise RuntimeError("a read_scope() session cannot write: use session_scope()")


@lru_cache
def _read_session_factory() -> sessionmaker[Session]:
    # AUTOCOMMIT: the driver sends no BEGIN before the first query and no COMMIT or
    # ROLLBACK when the connection goes back to the pool (nothing is open), so a read
    # costs the round trips of its queries alone. The pool is the same as for writes.
    engine = get_engine().execution_options(isolation_level="AUTOCOMMIT")
    factory = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
    # Each statement would commit on its own: an ORM write here must fail, not half-happen.
    event.listen(factory, "before_flush", _refuse_writes)
    return factory


@contextmanager
def read_scope() -> Iterator[Session]:
    """A unit of work that only reads: never commits, holds no transaction."""
    with _read_session_factory()() as session:
        yield session


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error."""
    session = _session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
