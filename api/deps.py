"""Request dependencies: a database unit of work and the acting organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from core.auth import authenticate
from core.db import session_scope
from core.errors import InvalidRequest


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_org(authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> str:
    """The organization of the request's API key; every query is scoped by it."""
    with session_scope() as session:
        return authenticate(session, authorization)


def refuse_nul_characters(request: Request) -> None:
    """Postgres text cannot hold NUL: an id, cursor or filter containing one could only
    fail inside the database, so it is refused before any route runs."""
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if "\x00" in value:
            raise InvalidRequest(f"{name}: must not contain NUL characters", param=name)


SessionDep = Annotated[Session, Depends(get_session)]
OrgDep = Annotated[str, Depends(get_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
