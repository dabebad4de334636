"""Idempotency-Key on the create endpoints (uploads, jobs): a client that retries a
request it never got an answer to gets the first answer back instead of a second file
or job. A key is scoped to its organization and endpoint and remembered for
`idempotency_ttl_seconds`; reusing it for a different request is a 422.

Only successful responses are remembered: a request that failed may be retried with the
same key and runs again. A record without a response is a request in progress; a second
request with its key is a 409 until it ends (or is presumed dead after
`idempotency_pending_seconds`, the process that ran it having died).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import session_scope
from core.errors import Conflict, IdempotencyKeyReused, InvalidRequest
from core.ids import now
from core.models import IdempotencyKey
from core.settings import get_settings

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def fingerprint(request: Any) -> str:
    """A digest of what a request asks for (JSON-able), independent of key order."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _stale() -> ColumnElement[bool]:
    settings, current = get_settings(), now()
    return or_(
        IdempotencyKey.created_at < current - settings.idempotency_ttl_seconds,
        and_(
            IdempotencyKey.response.is_(None),
            IdempotencyKey.created_at < current - settings.idempotency_pending_seconds,
        ),
    )


def _scope(org_id: str, endpoint: str, key: str) -> tuple[ColumnElement[bool], ...]:
    return (IdempotencyKey.organization_id == org_id, IdempotencyKey.endpoint == endpoint, IdempotencyKey.key == key)


def _in_progress() -> Conflict:
    return Conflict(
        f"A request with this {HEADER} is still in progress; retry when it has finished",
        param=HEADER,
        code="idempotency_key_in_use",
    )


def reserve(org_id: str, endpoint: str, key: str) -> IdempotencyKey | None:
    """Claim `key` for a new request (returns None) or return the earlier request's
    record. A request under the key still in progress is a 409.

    Takes no session: the claim must be committed before the request runs, so that a
    concurrent request with the key sees it. Each step is its own unit of work
    (`session_scope()`): clearing an expired record and claiming the key, then, when a
    concurrent request claimed it first, reading that request's record."""
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable characters", param=HEADER, code="invalid_idempotency_key"
        )
    scope = _scope(org_id, endpoint, key)
    try:
        with session_scope() as session:
            session.execute(delete(IdempotencyKey).where(*scope, _stale()))
            record = session.scalar(select(IdempotencyKey).where(*scope))
            if record is None:
                session.add(IdempotencyKey(organization_id=org_id, endpoint=endpoint, key=key))
    except IntegrityError:  # a concurrent request took the key first (the commit failed)
        with session_scope() as session:
            record = session.scalar(select(IdempotencyKey).where(*scope))
        if record is None:
            raise _in_progress() from None
    if record is not None and record.response is None:
        raise _in_progress()
    return record


def check_replay(record: IdempotencyKey, request_fingerprint: str) -> dict[str, Any]:
    """The first response, if this is the same request again."""
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused(
            f"This {HEADER} was used at {record.created_at} for a different request; use a new key for a new request",
            param=HEADER,
        )
    if record.response is None:
        raise _in_progress()
    return record.response


def complete(
    session: Session, org_id: str, endpoint: str, key: str, request_fingerprint: str, response: dict[str, Any]
) -> None:
    """The request succeeded: remember its response under the key (the caller commits)."""
    record = session.scalar(select(IdempotencyKey).where(*_scope(org_id, endpoint, key)))
    if record is not None:
        record.fingerprint, record.response = request_fingerprint, response


def release(session: Session, org_id: str, endpoint: str, key: str) -> None:
    """The request failed: forget the key so a retry runs again (the caller commits)."""
    session.execute(delete(IdempotencyKey).where(*_scope(org_id, endpoint, key), IdempotencyKey.response.is_(None)))


def forget_expired(session: Session) -> None:
    """Delete the records that expired (the caller commits)."""
    session.execute(delete(IdempotencyKey).where(_stale()))
