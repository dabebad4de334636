"""The one way a row with a status (a job, a merge, an evaluation) changes state: a
conditional UPDATE from the states that may move to the target, so two racing writers (a cancel and a
worker's claim, say) cannot both win."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, update
from sqlalchemy.orm import Session

from core.ids import now
from core.models import Evaluation, Job, Merge


def rows_matched(session: Session, statement: Any) -> int:
    """How many rows an UPDATE matched (execute() is typed for SELECTs, whose result has
    no row count)."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def move(
    session: Session,
    table: type[Job] | type[Merge] | type[Evaluation],
    transitions: Mapping[Any, frozenset[Any]],
    row_id: str,
    to: StrEnum,
    conditions: Sequence[ColumnElement[bool]],
    values: dict[str, Any],
) -> bool:
    """Move the row to `to` (with the column `values`) if its state allows it under
    `transitions` and the `conditions` hold; a terminal state also sets `finished_at`.
    Returns whether it moved."""
    sources = [state.value for state, targets in transitions.items() if to in targets]
    values = values | {"status": to.value}
    if not transitions[to]:
        values.setdefault("finished_at", now())
    stmt = update(table).where(table.id == row_id, table.status.in_(sources), *conditions).values(**values)
    return rows_matched(session, stmt) == 1
