"""Merge operations, as users see them: `POST /v1/models/{model}/merge` checks what is
cheap (the adapter exists, succeeded and can merge; its base model is still there; the
name to register is free), stores the merge `queued` and sends it to the training queue
once committed. A training worker runs it (worker.merge_runner; core.merge_runs has its
side of the record). Reads, events and cancel are here too, scoped by organization."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from core import fine_tuned_models, registered_models, registry
from core.auth import take_turn
from core.db import session_scope
from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.merge_runs import add_merge_event, move, publish
from core.models import Job, Merge, MergeEvent
from core.paging import page
from core.specs import PROMPT_LEARNING, Quantization, ResolvedSpec
from core.states import ACTIVE, MERGE_TERMINAL, MergeStatus
from core.storage import ObjectStore, StoredObject
from core.usage import check_room_for_outputs

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
ACTIVE_JOBS = [s.value for s in ACTIVE]
ACTIVE_MERGES = [MergeStatus.QUEUED.value, MergeStatus.RUNNING.value]
BaseWeights = Literal["original", "dequantized"]


class MergeRequest(BaseModel):
    """The body of `POST /v1/models/{model}/merge` (every field optional)."""

    model_config = ConfigDict(extra="forbid")

    register_as: Annotated[str, StringConstraints(pattern=registry.LOCAL_NAME.pattern, max_length=128)] | None = Field(
        default=None,
        description="Register the merged model under this name as a base model of the organization (listed by "
        "GET /v1/models, usable as a job's `model`); letters, digits, `_`, `.` and `-`",
    )
    dtype: Dtype = Field(
        default="auto",
        description="The merged weights' dtype; `auto`: bfloat16 on a GPU worker, the base model's own dtype on "
        "a CPU worker",
    )
    base_weights: BaseWeights = Field(
        default="original",
        description="`original`: merge into the base model's own weights (in full precision); `dequantized`: into "
        "the 4-bit weights the QLoRA adapter was trained against, dequantized, so the merged model computes what "
        'the trained 4-bit model did (README, "The QLoRA merge gap")',
    )


def get_merge(session: Session, org_id: str, merge_id: str) -> Merge:
    merge = session.scalar(select(Merge).where(Merge.id == merge_id, Merge.organization_id == org_id))
    if merge is None:
        raise NotFound(f"No merge with id {merge_id!r}", param="merge_id")
    return merge


def list_merges(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[Merge], bool]:
    """The organization's merges, newest first."""
    return page(session, select(Merge).where(Merge.organization_id == org_id), Merge, after, limit)


def list_events(
    session: Session, org_id: str, merge_id: str, after: str | None, limit: int
) -> tuple[list[MergeEvent], bool]:
    """The merge's log, newest first; 404 for a merge that is not the organization's."""
    of_org = exists().where(Merge.id == merge_id, Merge.organization_id == org_id)
    rows, has_more = page(
        session, select(MergeEvent).where(MergeEvent.merge_id == merge_id, of_org), MergeEvent, after, limit
    )
    if not rows:  # an empty page, or a merge that is not the organization's
        get_merge(session, org_id, merge_id)
    return rows, has_more


def _check_mergeable(name: str, adapter_type: str) -> None:
    if adapter_type in PROMPT_LEARNING:
        raise Conflict(
            f"{name} is a {adapter_type} adapter, which cannot be merged: prompt-learning adapters train virtual "
            "tokens (or key/value prefixes) put before the input, not changes to the model's weights, so there is "
            "nothing to merge into them; serve it as an adapter with PEFT (download it from its job)",
            param="model",
            code="adapter_not_mergeable",
        )


def base_of(session: Session, org_id: str, name: str, base_model: str) -> registry.ModelRef:
    """The base model the adapter `name` applies to: at creation, and again in the worker
    (it may have been removed meanwhile)."""
    try:
        return registered_models.resolve_for(session, org_id, base_model)
    except InvalidRequest as missing:
        raise Conflict(
            f"Cannot merge {name}: its base model {base_model!r} is no longer present on this service "
            f"({missing.message})",
            param="model",
            code="base_model_not_found",
        ) from None


def _check_name_free(session: Session, org_id: str, name: str) -> None:
    """A registered name must name one model for the organization: not a fine-tuned
    model's, not the service's own base model's, not another merge's (one that
    succeeded or may still succeed). The caller holds the organization's turn."""
    if fine_tuned_models.is_fine_tuned_name(name):
        raise InvalidRequest(
            f"register_as: {name!r} looks like a fine-tuned model or checkpoint name (ft:..., ftckpt-...); choose "
            "another name",
            param="register_as",
            code="invalid_model_name",
        )
    if name in {m.name for m in registry.list_models()}:
        raise Conflict(
            f"register_as: {name!r} is a base model of the service", param="register_as", code="model_exists"
        )
    taken = session.scalar(
        select(Merge).where(
            Merge.organization_id == org_id,
            Merge.registered_as == name,
            Merge.status.in_([*ACTIVE_MERGES, MergeStatus.SUCCEEDED.value]),
        )
    )
    if taken is not None:
        raise Conflict(
            f"register_as: {name!r} is already the name of the organization's model of merge {taken.id} "
            f"({taken.status})",
            param="register_as",
            code="model_exists",
        )


def _check_quantized(spec: ResolvedSpec, request: MergeRequest) -> None:
    if request.base_weights == "dequantized" and spec.qlora.quantization is None:
        raise InvalidRequest(
            f"base_weights: 'dequantized' merges into the 4-bit weights an adapter was trained against, but this "
            f"{spec.qlora.adapter.type} adapter was trained on the unquantized base; use 'original'",
            param="base_weights",
            code="adapter_not_quantized",
        )


def refuse_while_merging(session: Session, job_id: str, what: str, checkpoint_id: str | None = None) -> None:
    """A job's adapters (or one checkpoint's) stay while a queued or running merge is to
    read them (job and checkpoint deletion call this)."""
    stmt = select(Merge.id).where(Merge.job_id == job_id, Merge.status.in_(ACTIVE_MERGES))
    if checkpoint_id is not None:
        stmt = stmt.where(Merge.checkpoint_id == checkpoint_id)
    merge_id = session.scalar(stmt.limit(1))
    if merge_id is not None:
        raise Conflict(
            f"{what}: merge {merge_id} is to merge its adapter; cancel the merge or wait until it has finished",
            code="merge_in_progress",
        )


def create_merge(session: Session, org_id: str, name: str, request: MergeRequest) -> Merge:
    """Check the merge and store it `queued` (the caller commits, then publishes it:
    `submit_merge`). 404: no such model of the organization; 409: its job has not
    succeeded, its adapter cannot merge, its base is gone, or the name is taken."""
    adapter = fine_tuned_models.find(session, org_id, name, "model")
    fine_tuned_models.hold(session, adapter, "model")  # not deleted before this merge is committed and seen
    spec = ResolvedSpec.model_validate(adapter.job.spec)
    adapter_type = spec.qlora.adapter.type
    _check_mergeable(adapter.name, adapter_type)
    _check_quantized(spec, request)
    base = base_of(session, org_id, adapter.name, adapter.base_model)
    check_room_for_outputs(session, org_id, "A merged model")
    if request.register_as is not None:
        take_turn(session, org_id)
        _check_name_free(session, org_id, request.register_as)
    merge = Merge(
        id=new_id("ftmerge"),
        organization_id=org_id,
        model=adapter.name,
        job_id=adapter.job.id,
        checkpoint_id=adapter.checkpoint.id if adapter.checkpoint else None,
        adapter_key=adapter.adapter_key,
        adapter_type=adapter_type,
        base_model=base.name,
        dtype=request.dtype,
        base_weights=request.base_weights,
        registered_as=request.register_as,
        status=MergeStatus.QUEUED.value,
    )
    session.add(merge)
    session.flush()
    registering = f"; to be registered as {request.register_as!r}" if request.register_as else ""
    add_merge_event(session, merge.id, f"Merge of {adapter.name} ({adapter_type}) into {base.name} queued{registering}")
    session.refresh(merge)
    return merge


def dequantize_from(session: Session, merge: Merge) -> Quantization | None:
    """The quantization the adapter was trained on, when the merge goes into the
    dequantized 4-bit weights; None when it goes into the base's own weights."""
    if merge.base_weights != "dequantized":
        return None
    spec = session.scalar(select(Job.spec).where(Job.id == merge.job_id))
    return ResolvedSpec.model_validate(spec).qlora.quantization


def submit_merge(org_id: str, name: str, request: MergeRequest) -> Merge:
    """Create and commit the merge, then send it to the training queue; a merge whose
    message could not be sent waits `queued` and the maintenance loop sends it later."""
    with session_scope() as session:
        merge = create_merge(session, org_id, name, request)
    if not publish(merge.id):
        with session_scope() as session:
            add_merge_event(
                session,
                merge.id,
                "The queue broker could not be reached; the merge is sent again when it is back",
                level="warn",
            )
    return merge


def cancel_merge(session: Session, org_id: str, merge_id: str) -> Merge:
    """A queued merge is cancelled at once; a running one too, and its worker's result
    is discarded (its publication is conditioned on the merge still running)."""
    merge = get_merge(session, org_id, merge_id)
    if not move(session, merge.id, MergeStatus.CANCELLED, message="Merge cancelled by the user"):
        session.refresh(merge)
        raise Conflict(f"Merge {merge_id} is already {merge.status}", code="merge_not_cancellable")
    session.refresh(merge)
    return merge


def _refuse_while_used(session: Session, org_id: str, name: str) -> None:
    """A registered model stays while an active job trains on it or a merge merges onto it."""
    job_id = session.scalar(
        select(Job.id)
        .where(Job.organization_id == org_id, Job.base_model == name, Job.status.in_(ACTIVE_JOBS))
        .limit(1)
    )
    merge_id = session.scalar(
        select(Merge.id)
        .where(Merge.organization_id == org_id, Merge.base_model == name, Merge.status.in_(ACTIVE_MERGES))
        .limit(1)
    )
    if job_id is not None or merge_id is not None:
        user = f"job {job_id} trains on it" if job_id is not None else f"merge {merge_id} merges onto it"
        raise Conflict(
            f"The registered model {name!r} cannot be deleted: {user}; cancel it or wait until it has finished",
            code="model_in_use",
        )


def delete_merge(storage: ObjectStore, org_id: str, merge_id: str) -> None:
    """Delete a finished merge: its row and log, its merged model (a registered one is
    then no longer a base model of the organization), then its bytes. Commits."""
    with session_scope() as session:
        take_turn(session, org_id)  # job creations naming its registered model wait for this
        merge = get_merge(session, org_id, merge_id)
        if merge.status not in MERGE_TERMINAL or merge.lease_owner is not None:
            raise Conflict(
                f"Merge {merge_id} is {merge.status}"
                + (" and its worker is still stopping" if merge.status in MERGE_TERMINAL else "")
                + "; only a finished merge can be deleted (cancel it first)",
                code="merge_not_finished",
            )
        if merge.registered_as is not None and merge.status == MergeStatus.SUCCEEDED:
            _refuse_while_used(session, org_id, merge.registered_as)
        session.delete(merge)
    storage.delete(f"merges/{merge_id}")  # every attempt's objects


def merged_archive(session: Session, org_id: str, merge_id: str) -> tuple[str, StoredObject]:
    """A succeeded merge's archive: its file name and stored object."""
    merge = get_merge(session, org_id, merge_id)
    key, size, sha256, filename = merge.storage_key, merge.bytes, merge.sha256, merge.filename
    if merge.status != MergeStatus.SUCCEEDED or key is None or size is None or sha256 is None or filename is None:
        raise Conflict(
            f"Merge {merge_id} is {merge.status}; its merged model can be downloaded once it succeeded",
            param="merge_id",
            code="merge_not_succeeded",
        )
    return filename, StoredObject(key, size, sha256)
