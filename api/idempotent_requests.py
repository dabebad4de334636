"""Idempotent create requests, the API side of Idempotency-Key (core.idempotency):
claim the key, run the request once, remember its answer; a retry gets that answer again,
byte for byte, with `Idempotent-Replayed: true`. One mechanism for both create routes,
whether the request's fingerprint is known before it runs (a job spec) or only once its
body has streamed in (an upload)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Header, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

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

Body = TypeVar("Body", bound=BaseModel)
# What a create request does, given whether an earlier request under its key already
# answered (`replaying`): it returns the fingerprint of what it asks for and, unless
# replaying, the object it created. A replaying request creates nothing: it reads the
# request only as far as its fingerprint and discards what it read.
Action = Callable[[bool], Awaitable[tuple[str, Body | None]]]


def _replay(record: IdempotencyKey, fingerprint: str, model: type[Body]) -> Response:
    """The first answer again: it is stored as JSON, and sent as the model sent it."""
    body = model.model_validate(idempotency.check_replay(record, fingerprint))
    return Response(body.model_dump_json(), media_type="application/json", headers={"Idempotent-Replayed": "true"})


def _remember(org: str, endpoint: str, key: str, fingerprint: str, body: BaseModel) -> None:
    with session_scope() as session:
        idempotency.complete(session, org, endpoint, key, fingerprint, body.model_dump(mode="json"))


def _forget(org: str, endpoint: str, key: str) -> None:
    with session_scope() as session:
        idempotency.release(session, org, endpoint, key)


def _created(body: Body | None) -> Body:
    if body is None:
        raise RuntimeError("a create request that was not replaying created nothing")
    return body


async def run_once(
    org: str, endpoint: str, key: str | None, model: type[Body], action: Action[Body]
) -> Body | Response:
    """Run `action` once per `key`: without a key it just runs; with a new key it runs
    and its answer is remembered (its failure forgets the key, so a retry runs again);
    with the key of an earlier request that answered, it only reads the request's
    fingerprint and the first answer is replayed (422 if it asked for something else,
    409 while the first request is still running)."""
    if key is None:
        return _created((await action(False))[1])
    earlier = await run_in_threadpool(idempotency.reserve, org, endpoint, key)
    if earlier is not None:
        fingerprint, _ = await action(True)
        return _replay(earlier, fingerprint, model)
    try:  # the key is this request's claim now
        fingerprint, body = await action(False)
        created = _created(body)
    except BaseException:
        await run_in_threadpool(_forget, org, endpoint, key)  # failures are not remembered
        raise
    await run_in_threadpool(_remember, org, endpoint, key, fingerprint, created)
    return created
