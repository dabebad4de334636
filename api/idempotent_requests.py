"""Idempotent create requests, the API side of Idempotency-Key (core.idempotency):
reserve the key, run the request once, remember its response; a retry gets that
response with `Idempotent-Replayed: true`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Header, Response
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


def reserve(org: str, endpoint: str, key: str) -> IdempotencyKey | None:
    with session_scope() as session:
        return idempotency.reserve(session, org, endpoint, key)


Body = TypeVar("Body", bound=BaseModel)


def replay(record: IdempotencyKey, fingerprint: str, model: type[BaseModel]) -> Response:
    """The first answer again, byte for byte: it is stored as JSON and sent as the model
    sent it the first time."""
    body = model.model_validate(idempotency.check_replay(record, fingerprint))
    return Response(body.model_dump_json(), media_type="application/json", headers={"Idempotent-Replayed": "true"})


def remember(org: str, endpoint: str, key: str, fingerprint: str, response: BaseModel) -> None:
    with session_scope() as session:
        idempotency.complete(session, org, endpoint, key, fingerprint, response.model_dump(mode="json"))


def forget(org: str, endpoint: str, key: str) -> None:
    with session_scope() as session:
        idempotency.release(session, org, endpoint, key)


def run_once(
    org: str, endpoint: str, key: str | None, fingerprint: str, model: type[Body], action: Callable[[], Body]
) -> Body | Response:
    """For requests whose fingerprint is known before they run (JSON bodies)."""
    if key is None:
        return action()
    if (record := reserve(org, endpoint, key)) is not None:
        return replay(record, fingerprint, model)
    try:
        response = action()
    except BaseException:
        forget(org, endpoint, key)
        raise
    remember(org, endpoint, key, fingerprint, response)
    return response
