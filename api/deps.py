"""Request dependencies: a database unit of work and the acting organization."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core import auth
from core.db import read_scope, session_scope
from core.errors import InvalidRequest


async def get_read_session() -> AsyncIterator[Session]:
    """The unit of work of a route that only reads (core.db.read_scope): no transaction,
    nothing to commit. Async for the same reason as get_session."""
    with read_scope() as session:
        yield session


async def get_session() -> AsyncIterator[Session]:
    """The route's unit of work. Async on purpose: its commit and close run on the event
    loop as soon as the route returns. A sync generator would need a free worker thread
    for that while it still holds its pooled connection, and under load every thread
    can be waiting for a connection: the API deadlocks (fastapi#3205)."""
    with session_scope() as session:
        yield session


# Declares the key in /openapi.json (the Authorize button of /docs). auto_error=False:
# FastAPI's own 401 has neither this API's error body nor its codes; a request without a
# bearer key gets None here and core.auth answers it.
API_KEY = HTTPBearer(
    scheme_name="APIKey",
    bearerFormat="ftsk-...",
    description="An API key of the organization: `Authorization: Bearer ftsk-...`",
    auto_error=False,
)


async def get_org(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(API_KEY)]) -> str:
    """The organization of the request's API key; every query is scoped by it. No key
    (or another scheme) is `missing_api_key`, an unknown or revoked one `invalid_api_key`,
    both 401 with `WWW-Authenticate: Bearer`. Async: a key seen in the last
    `auth_cache_seconds` costs neither a query nor a worker thread."""
    key = auth.bearer_key(credentials.credentials if credentials is not None else None)
    cached = auth.cached_organization(key)
    return cached if cached is not None else await run_in_threadpool(auth.authenticate, key)


async def refuse_nul_characters(request: Request) -> None:  # async: no thread hop
    """Postgres text cannot hold NUL: an id, cursor or filter containing one could only
    fail inside the database, so it is refused before any route runs."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if "\x00" in value:
            raise InvalidRequest(f"{name}: must not contain NUL characters", param=name)


# scope="function": closed when the route function returns, not after its response is
# serialized (which waits for a worker thread too).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
OrgDep = Annotated[str, Depends(get_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
