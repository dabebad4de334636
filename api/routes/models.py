from __future__ import annotations

from fastapi import APIRouter

from api.deps import OrgDep, ReadSessionDep
from api.openapi import ModelRoute
from api.schemas import ListPage, ModelObject
from core import registered_models, registry

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ModelRoute)


@router.get("")
def list_models(session: ReadSessionDep, org: OrgDep) -> ListPage[ModelObject]:
    """Base models that can be fine-tuned: local directories and the organization's
    registered (merged) models (hub ids are accepted too)."""
    models = [*registry.list_models(), *registered_models.registered_models(session, org)]
    return ListPage[ModelObject].of([ModelObject.from_ref(m) for m in models], False)
