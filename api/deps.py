"""Request dependencies: a database unit of work and the acting organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Query
from sqlalchemy.orm import Session

from core.auth import authenticate
from core.db import session_scope


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_org(authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> str:
    """The organization of the request's API key; every query is scoped by it."""
    with session_scope() as session:
        return authenticate(session, authorization)


SessionDep = Annotated[Session, Depends(get_session)]
OrgDep = Annotated[str, Depends(get_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
