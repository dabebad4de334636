"""Request dependencies: a database unit of work and the acting organization."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query
from sqlalchemy.orm import Session

from core.db import session_scope
from core.models import LOCAL_ORG


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_org() -> str:
    # One organization until API keys arrive; routes already pass it to every query.
    return LOCAL_ORG


SessionDep = Annotated[Session, Depends(get_session)]
OrgDep = Annotated[str, Depends(get_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
