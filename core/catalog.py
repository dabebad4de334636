"""The models an organization sees at /v1/models: the base models under the models root
(`owned_by: local`), the merged models it registered as base models and its fine-tuned
models (`owned_by`: the organization). A list shows the base models first (the service's
by name, then the registered ones, oldest first), then the fine-tuned models, newest
first; its cursor (`after`) is a model's id. Hub ids are accepted as a job's model but
not listed: the API has no network to look them up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core import fine_tuned_models, registered_models, registry
from core.errors import InvalidRequest, NotFound
from core.job_cleanup import delete_model as delete_fine_tuned_model
from core.jobs import fine_tuned_model_name
from core.models import Job
from core.storage import ObjectStore


@dataclass(frozen=True)
class ListedModel:
    id: str
    # Unix seconds: when a base model's directory last changed (a registered one's merge
    # finished), when a fine-tuned model's job finished.
    created: int
    owned_by: str


def _base(model: registry.ModelRef) -> ListedModel:
    return ListedModel(model.name, model.created_at, model.owned_by)


def _bases(session: Session, org_id: str) -> list[registry.ModelRef]:
    return [*registry.list_models(), *registered_models.registered_models(session, org_id)]


def _fine_tuned(job: Job) -> ListedModel:
    return ListedModel(fine_tuned_model_name(job), job.finished_at or job.created_at, job.organization_id)


def list_models(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[ListedModel], bool]:
    bases = _bases(session, org_id)
    names = [base.name for base in bases]
    if after is not None and after not in names:  # a fine-tuned model's name (or no cursor of this list)
        jobs, more = fine_tuned_models.list_models(session, org_id, after, limit)
        return [_fine_tuned(job) for job in jobs], more
    start = names.index(after) + 1 if after is not None else 0
    shown = bases[start : start + limit]
    # (a page full of base models asks for 0 fine-tuned ones: whether any follow)
    jobs, more = fine_tuned_models.list_models(session, org_id, None, limit - len(shown))
    return [*map(_base, shown), *map(_fine_tuned, jobs)], more or start + limit < len(bases)


def _no_such_model(model_id: str, param: str) -> NotFound:
    return NotFound(
        f"No model named {model_id!r}: neither a base model (under the models root, or registered by the "
        "organization) nor a fine-tuned model (ft:...) of the organization",
        param=param,
        code="model_not_found",
    )


def base_model(session: Session, org_id: str, model_id: str, param: str) -> registry.ModelRef:
    """A base model the organization sees at /v1/models (404 for any other name)."""
    base = next((model for model in registry.list_models() if model.name == model_id), None)
    if base is None:  # (the service's own first: reading one costs no query)
        registered = registered_models.registered_models(session, org_id)
        base = next((model for model in registered if model.name == model_id), None)
    if base is None:
        raise _no_such_model(model_id, param)
    return base


def get_model(session: Session, org_id: str, model_id: str, param: str) -> ListedModel:
    if fine_tuned_models.is_fine_tuned_name(model_id):
        return _fine_tuned(fine_tuned_models.get_model(session, org_id, model_id, param))
    return _base(base_model(session, org_id, model_id, param))


def delete_model(storage: ObjectStore, session: Session, org_id: str, model_id: str, param: str) -> None:
    """Fine-tuned models only (core.job_cleanup.delete_model, in a transaction of its
    own); base models are the service's, managed where they are stored, or a merge's
    (deleted with it). `session`: to tell a base model from no model."""
    if fine_tuned_models.is_fine_tuned_name(model_id):
        delete_fine_tuned_model(storage, org_id, model_id, param)
        return
    base = get_model(session, org_id, model_id, param)
    raise InvalidRequest(
        f"{model_id!r} is a base model, which the API does not delete as a model: "
        + (
            "the service's base models are directories under its models root"
            if base.owned_by != org_id
            else "a registered merged model goes with its merge (DELETE /v1/merges/{merge_id})"
        )
        + "; only fine-tuned models (ft:...) are deleted here",
        param=param,
        code="base_model_not_deletable",
    )
