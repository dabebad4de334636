"""Models: the base models and the organization's fine-tuned models (OpenAI's model
objects). A fine-tuned model's id has colons, and a hub base model's a slash, so the id
is a `path` parameter (named `model`, as OpenAI names it); routes under a model (the
merge's `POST /v1/models/{model}/merge`, api.routes.merges) have their own suffix and
method: never declare another GET or DELETE on `/{model:path}`, which would take their
path as a model's id."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Limit, OrgDep, ReadSessionDep
from api.openapi import ModelRoute
from api.schemas import DeletedModel, ListPage, ModelObject
from core import catalog
from core.storage import get_storage

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=ModelRoute)

PARAM = "model"


@router.get("")
def list_models(
    session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 100
) -> ListPage[ModelObject]:
    """The base models that can be fine-tuned (local directories, then the merged models
    the organization registered; hub ids are accepted as a job's model too), then the
    organization's fine-tuned models, newest first."""
    rows, has_more = catalog.list_models(session, org, after, limit)
    return ListPage[ModelObject].of([ModelObject.from_listed(m) for m in rows], has_more)


@router.get("/{model:path}")
def get_model(model: str, session: ReadSessionDep, org: OrgDep) -> ModelObject:
    """A base model, or one of the organization's fine-tuned models."""
    return ModelObject.from_listed(catalog.get_model(session, org, model, PARAM))


@router.delete("/{model:path}")
def delete_model(model: str, session: ReadSessionDep, org: OrgDep) -> DeletedModel:
    """Delete a fine-tuned model: its adapter and its job's checkpoints (the job itself
    stays). `409` while a job continues training it or one of its checkpoints, or a merge
    is to read one of them; base models are not deleted here (`400`)."""
    catalog.delete_model(get_storage(), session, org, model, PARAM)
    return DeletedModel(id=model)
