"""Request dependencies: a database unit of work, the acting organization, and the
query parameters a route takes (those it does not take are refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
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


class BracketedFilter:
    """A filter sent as `family[key]=value` pairs, the way the OpenAI client sends its
    `metadata` filter (`jobs.list(metadata={"team": "a"})` asks `?metadata[team]=a`):
    the pairs as a dict, None when none was sent. Routes that depend on it take such
    parameters; `refuse_unknown_query_parameters` knows them by it."""

    def __init__(self, family: str, max_key_length: int, max_value_length: int) -> None:
        self.family, self.max_key, self.max_value = family, max_key_length, max_value_length

    def openapi_parameter(self, description: str) -> dict[str, Any]:
        """The parameter as /openapi.json describes it (FastAPI cannot derive it)."""
        return {
            "name": self.family,
            "in": "query",
            "required": False,
            "style": "deepObject",
            "explode": True,
            "description": description,
            "schema": {"type": "object", "additionalProperties": {"type": "string", "maxLength": self.max_value}},
        }

    async def __call__(self, request: Request) -> dict[str, str] | None:  # async: no thread hop
        pairs: dict[str, str] = {}
        for name, value in request.query_params.multi_items():
            if name == self.family:
                raise InvalidRequest(
                    f"{name}: give the filter as {self.family}[key]=value, one parameter per key", param=name
                )
            if not name.startswith(f"{self.family}[") or not name.endswith("]"):
                continue
            key = name[len(self.family) + 1 : -1]
            if not 0 < len(key) <= self.max_key or "\x00" in key:
                raise InvalidRequest(f"{name}: the key must be 1 to {self.max_key} characters", param=name)
            if len(value) > self.max_value:
                raise InvalidRequest(f"{name}: the value must be at most {self.max_value} characters", param=name)
            if key in pairs:
                raise InvalidRequest(f"{name}: given more than once", param=name)
            pairs[key] = value
        return pairs or None


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for dependency in dependant.dependencies:
        yield dependency
        yield from _dependencies(dependency)


# Per route (by id; routes are not hashable), with the route itself, whose id cannot be
# reused while it is kept here.
_ACCEPTED: dict[int, tuple[APIRoute, frozenset[str], frozenset[str]]] = {}


def _query_parameters(route: APIRoute) -> tuple[frozenset[str], frozenset[str]]:
    """The names of the query parameters the route (and its dependencies) declare, and
    the families of its bracketed filters."""
    cached = _ACCEPTED.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1], cached[2]
    names = {field.alias for field in route.dependant.query_params}
    families = set()
    for dependency in _dependencies(route.dependant):
        names.update(field.alias for field in dependency.query_params)
        if isinstance(dependency.call, BracketedFilter):
            families.add(dependency.call.family)
    _ACCEPTED[id(route)] = (route, frozenset(names), frozenset(families))
    return frozenset(names), frozenset(families)


async def refuse_unknown_query_parameters(request: Request) -> None:  # async: no thread hop
    """A query parameter the route does not take is refused, naming it: a misspelt or
    unsupported filter must not be silently ignored (answering with everything).
    Every route of the app depends on this, so new routes are covered too."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    names, families = _query_parameters(route)
    for name in request.query_params:
        if name in names or name.split("[", 1)[0] in families:
            continue
        accepted = sorted(names) + [f"{family}[key]" for family in sorted(families)]
        raise InvalidRequest(
            f"Unknown query parameter {name!r}; this endpoint takes "
            + (", ".join(accepted) if accepted else "no query parameters"),
            param=name,
            code="unknown_parameter",
        )


# scope="function": closed when the route function returns, not after its response is
# serialized (which waits for a worker thread too).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
OrgDep = Annotated[str, Depends(get_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
# OpenAI's job metadata filter; the same bounds as the metadata a job may carry.
METADATA = BracketedFilter("metadata", max_key_length=64, max_value_length=512)
MetadataFilter = Annotated[dict[str, str] | None, Depends(METADATA)]
