"""The base models organizations registered: merged models (core.merges) that are their
own base models, listed by GET /v1/models for their organization alone and usable as a
job's `model` there (stored as the merge's archive, extracted on a host's first use:
core.model_cache)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Merge
from core.registry import ModelRef, resolve_model
from core.settings import get_settings
from core.states import MergeStatus


def registered_ref(merge: Merge) -> ModelRef:
    """The model a succeeded merge registered, as its organization names it."""
    assert merge.registered_as is not None and merge.storage_key is not None, "a registered merge's model"
    return ModelRef(
        merge.registered_as,
        str(get_settings().model_cache_root / merge.id),
        True,
        merge.finished_at or merge.created_at,
        archive_key=merge.storage_key,
        owned_by=merge.organization_id,
    )


def registered_models(session: Session, org_id: str) -> list[ModelRef]:
    """The organization's registered models, oldest first."""
    stmt = select(Merge).where(
        Merge.organization_id == org_id,
        Merge.registered_as.is_not(None),
        Merge.storage_key.is_not(None),
        Merge.status == MergeStatus.SUCCEEDED.value,
    )
    return [registered_ref(m) for m in session.scalars(stmt.order_by(Merge.pk))]


def resolve_for(session: Session, org_id: str, name: str) -> ModelRef:
    """`resolve_model` for an organization: its registered models too."""
    return resolve_model(name, registered_models(session, org_id))
