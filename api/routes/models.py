from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import OrgDep
from api.openapi import PlainRoute
from api.serializers import as_list
from core import registry

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=PlainRoute)


@router.get("")
def list_models(org: OrgDep) -> dict[str, Any]:
    """Base models that can be fine-tuned from local directories (hub ids are accepted too)."""
    models = [
        {"id": m.name, "object": "model", "created": m.created_at, "owned_by": "local"} for m in registry.list_models()
    ]
    return as_list(models, False)
