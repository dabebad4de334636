"""What a model's name stands for when an organization generates with it: the
inference `Target` (core.inference) of a base model or of a fine-tuned model (its
adapter, the base it was trained on, and the quantization it was trained against)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core import catalog, fine_tuned_models, registered_models
from core.errors import Conflict, InvalidRequest
from core.inference import AdapterTarget, BaseTarget, Target
from core.merges import refuse_while_merging
from core.models import Job
from core.specs import Quantization, ResolvedSpec

# Adapters whose layers peft can switch per request (named adapters, mixed batches).
SERVABLE_ADAPTERS = ("lora",)
# Postgres' "lock not available" (SELECT ... NOWAIT on a row another transaction locked).
LOCK_NOT_AVAILABLE = "55P03"


def resolve(session: Session, org_id: str, model: str, param: str = "model") -> Target:
    """The target `model` names for the organization: 404 for a name it does not have
    (another organization's included), 409 while a merge is to read the fine-tuned
    model or a deletion of it is under way, 400 for an adapter peft cannot switch per
    request. A base model alone is loaded as the QLoRA default quantizes it, so that it
    shares one loaded copy with the adapters trained on it."""
    if not fine_tuned_models.is_fine_tuned_name(model):
        return Target(
            base=BaseTarget.of(catalog.base_model(session, org_id, model, param)), quantization=Quantization()
        )
    adapter = fine_tuned_models.find(session, org_id, model, param)
    refuse_while_merging(session, adapter.job.id, f"Model {model} cannot be used now")
    spec = ResolvedSpec.model_validate(adapter.job.spec)
    if spec.qlora.adapter.type not in SERVABLE_ADAPTERS:
        raise InvalidRequest(
            f"Model {model} is a {spec.qlora.adapter.type} adapter; inference serves LoRA adapters (merge it "
            "into its base to serve it as a model of its own)",
            param=param,
            code="adapter_not_servable",
        )
    try:
        base = registered_models.resolve_for(session, org_id, adapter.base_model)
    except InvalidRequest as missing:
        raise Conflict(
            f"Model {model}: its base model {adapter.base_model!r} is no longer present ({missing.message})",
            param=param,
            code="base_model_not_found",
        ) from None
    _refuse_while_deleting(session, adapter.job, model, param)
    return Target(
        base=BaseTarget.of(base),
        adapter=AdapterTarget(name=adapter.name, key=adapter.adapter_key),
        quantization=spec.qlora.quantization,
    )


def _refuse_while_deleting(session: Session, job: Job, model: str, param: str) -> None:
    """409 while a deletion of the model (or of its job, or a checkpoint) holds its job's
    row (core.jobs.lock_job) until it commits. Postgres only: on SQLite the deletion
    holds the database's write lock and reads see the state before it."""
    if session.get_bind().dialect.name != "postgresql":
        return
    try:
        session.execute(select(Job.pk).where(Job.pk == job.pk).with_for_update(read=True, nowait=True))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise Conflict(
            f"Model {model} is being deleted or changed; retry in a moment", param=param, code="model_busy"
        ) from None
