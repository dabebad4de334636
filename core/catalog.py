"""The models an organization sees at /v1/models: the base models under the models root
(`owned_by: local`) and its own fine-tuned models (`owned_by`: the organization). A list
shows the base models first, by name, then the fine-tuned models, newest first; its
cursor (`after`) is a model's id. Hub ids are accepted as a job's model but not listed:
the API has no network to look them up."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core import fine_tuned_models, registry
from core.errors import InvalidRequest, NotFound
from core.jobs import fine_tuned_model_name
from core.models import Job
from core.storage import LocalStorage

LOCAL = "local"


@dataclass(frozen=True)
class ListedModel:
    id: str
    # Unix seconds: when a base model's directory last changed, when a fine-tuned model's job finished.
    created: int
    owned_by: str


def _base(model: registry.ModelRef) -> ListedModel:
    return ListedModel(model.name, model.created_at, LOCAL)


def _fine_tuned(job: Job) -> ListedModel:
    return ListedModel(fine_tuned_model_name(job), job.finished_at or job.created_at, job.organization_id)


def list_models(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[ListedModel], bool]:
    bases = registry.list_models()
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
        f"No model named {model_id!r}: neither a base model under the models root nor a fine-tuned model "
        "(ft:...) of the organization",
        param=param,
        code="model_not_found",
    )


def get_model(session: Session, org_id: str, model_id: str, param: str) -> ListedModel:
    if fine_tuned_models.is_fine_tuned_name(model_id):
        return _fine_tuned(fine_tuned_models.get_model(session, org_id, model_id, param))
    base = registry.local_model(model_id)
    if base is None:
        raise _no_such_model(model_id, param)
    return _base(base)


def delete_model(storage: LocalStorage, org_id: str, model_id: str, param: str) -> None:
    """Fine-tuned models only (core.fine_tuned_models.delete_model); base models are the
    server's, managed where they are stored."""
    if fine_tuned_models.is_fine_tuned_name(model_id):
        fine_tuned_models.delete_model(storage, org_id, model_id, param)
        return
    if registry.local_model(model_id) is None:
        raise _no_such_model(model_id, param)
    raise InvalidRequest(
        f"{model_id!r} is a base model, which the API does not delete (base models are directories under the "
        "server's models root); only fine-tuned models (ft:...) are deleted here",
        param=param,
        code="base_model_not_deletable",
    )
