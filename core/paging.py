"""Cursor paging in the OpenAI shape: newest first, `after` is the id of the last
object of the previous page, `has_more` says whether another page exists."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from core.errors import NotFound

Row = TypeVar("Row")


def page(session: Session, stmt: Select[Any], model: Any, after: str | None, limit: int) -> tuple[list[Any], bool]:
    if after is not None:
        # Looked up within the list itself: another organization's id is no cursor here.
        cursor_pk = session.scalar(stmt.with_only_columns(model.pk).where(model.id == after))
        if cursor_pk is None:
            raise NotFound(f"cursor {after!r} does not name an object of this list", param="after")
        stmt = stmt.where(model.pk < cursor_pk)
    rows = list(session.scalars(stmt.order_by(model.pk.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
