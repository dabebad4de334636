"""Idempotent create requests, the API side of Idempotency-Key (core.idempotency):
reserve the key, run the request once, remember its response; a retry gets that
response with `Idempotent-Replayed: true`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse

from core import idempotency
from core.db import session_scope
from core.models import IdempotencyKey

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="Makes a retry of this request return the first response instead of creating a second "
        "object; remembered for 24 hours.",
    ),
]


def reserve(org: str, endpoint: str, key: str) -> IdempotencyKey | None:
    with session_scope() as session:
        return idempotency.reserve(session, org, endpoint, key)


def replay(record: IdempotencyKey, fingerprint: str) -> JSONResponse:
    body = idempotency.check_replay(record, fingerprint)
    return JSONResponse(body, headers={"Idempotent-Replayed": "true"})


def remember(org: str, endpoint: str, key: str, fingerprint: str, response: dict[str, Any]) -> None:
    with session_scope() as session:
        idempotency.complete(session, org, endpoint, key, fingerprint, response)


def forget(org: str, endpoint: str, key: str) -> None:
    with session_scope() as session:
        idempotency.release(session, org, endpoint, key)


def run_once(
    org: str, endpoint: str, key: str | None, fingerprint: str, action: Callable[[], dict[str, Any]]
) -> dict[str, Any] | JSONResponse:
    """For requests whose fingerprint is known before they run (JSON bodies)."""
    if key is None:
        return action()
    if (record := reserve(org, endpoint, key)) is not None:
        return replay(record, fingerprint)
    try:
        response = action()
    except BaseException:
        forget(org, endpoint, key)
        raise
    remember(org, endpoint, key, fingerprint, response)
    return response
