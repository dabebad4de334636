"""Waiting for a preview that a pre-flight worker renders: on the event loop, so a
request that waits holds no thread and no database connection between its checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi.concurrency import run_in_threadpool

from core import previews
from core.errors import PreflightUnavailable
from core.settings import get_settings

# First checks soon (a cached tokenizer answers in tens of milliseconds), then less often.
FIRST_CHECK_SECONDS, MAX_CHECK_SECONDS = 0.02, 0.5


async def wait_for_preview(preview_id: str) -> dict[str, Any]:
    timeout = get_settings().preview_timeout_seconds
    deadline = time.monotonic() + timeout
    pause = FIRST_CHECK_SECONDS
    while (result := await run_in_threadpool(previews.answer, preview_id)) is None:
        if time.monotonic() >= deadline:
            raise PreflightUnavailable(
                f"No pre-flight worker rendered the preview within {timeout:.0f} s; one runs with `ftsvc serve`, "
                "or `ftsvc worker --queues preflight`. Try again later.",
                param="model",
            )
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_CHECK_SECONDS)
    return result
