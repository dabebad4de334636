from __future__ import annotations

from fastapi import APIRouter

from api.deps import OrgDep
from api.openapi import ModelRoute
from api.schemas import ListPage, ModelObject
from core import registry

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ModelRoute)


@router.get("")
def list_models(org: OrgDep) -> ListPage[ModelObject]:
    """Base models that can be fine-tuned from local directories (hub ids are accepted too)."""
    return ListPage[ModelObject].of([ModelObject.from_ref(m) for m in registry.list_models()], False)
