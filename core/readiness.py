"""Whether this process can serve: the database, the broker and the artifact store each
answer within a short time (GET /readyz). Each check runs in a thread of its own, all at
once, so a dependency that hangs (a black-holed address) costs its timeout and no more,
and the answer names every part that failed, not only the first."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from sqlalchemy import text

from core.db import get_engine
from core.queue import check_broker
from core.settings import get_settings
from core.storage import get_storage


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    seconds: float
    error: str | None = None


def _database(_: float) -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def _store(_: float) -> None:
    get_storage().check()


# name -> check(timeout): raises when the part cannot be reached. The database's pool and
# the store have no per-call timeout: the thread's wait bounds them.
CHECKS: dict[str, Callable[[float], None]] = {"database": _database, "broker": check_broker, "store": _store}


def check_all(timeout: float | None = None) -> list[CheckResult]:
    timeout = get_settings().readiness_timeout_seconds if timeout is None else timeout
    # Not a `with` block: its exit would wait for a check that hangs.
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
    started = time.monotonic()
    futures = {name: pool.submit(check, timeout) for name, check in CHECKS.items()}
    results = []
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, started + timeout - time.monotonic()))
            results.append(CheckResult(name, True, time.monotonic() - started))
        except FutureTimeout:
            results.append(CheckResult(name, False, timeout, f"no answer within {timeout:g} s"))
        except Exception as exc:
            results.append(CheckResult(name, False, time.monotonic() - started, f"{type(exc).__name__}: {exc}"))
    pool.shutdown(wait=False)
    return results
