"""Fine-tuned models and their checkpoints by name, as the API hands them out: what
`GET /v1/models/{id}`, a job's `model` and `from_checkpoint`, and a merge accept; and
the fine-tuned models as objects (listed, read, and what uses them: deleting one is
core.job_cleanup's).

Names (OpenAI's shapes): a job's `fine_tuned_model` is `ft:<base>:<org>[:<suffix>]:<job id>`
and a checkpoint's `fine_tuned_model_checkpoint` is that name plus `:ckpt-step-<step>`; a
checkpoint's id (`ftckpt-...`) names it too. `<base>` is always the real base model, also
for a job that continued a fine-tuned model."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from core import artifacts
from core.errors import Conflict, NotFound
from core.jobs import fine_tuned_model_name as model_name
from core.jobs import lock_job
from core.models import Artifact, Checkpoint, Job
from core.paging import page
from core.states import ACTIVE, JobStatus

PREFIX = "ft:"
CHECKPOINT_ID_PREFIX = "ftckpt-"
CHECKPOINT_MARK = "ckpt-step-"


def checkpoint_name(job: Job, step: int) -> str:
    return f"{model_name(job)}:{CHECKPOINT_MARK}{step}"


def is_fine_tuned_name(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith(CHECKPOINT_ID_PREFIX)


@dataclass(frozen=True)
class TrainedAdapter:
    """An adapter a job trained: its final one (`checkpoint` None) or a checkpoint's."""

    name: str
    job: Job
    checkpoint: Checkpoint | None
    adapter_key: str
    # The base model the adapter applies to (a local model's name or a hub id).
    base_model: str


def _no_such_name(name: str, param: str) -> NotFound:
    return NotFound(f"No fine-tuned model or checkpoint named {name!r}", param=param, code="model_not_found")


def _job_of(session: Session, org_id: str, job_id: str, name: str, param: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.organization_id == org_id))
    if job is None or not name.startswith(model_name(job)):
        raise _no_such_name(name, param)
    return job


def _from_checkpoint(job: Job, checkpoint: Checkpoint | None, name: str, param: str) -> TrainedAdapter:
    if checkpoint is None:
        raise NotFound(f"No checkpoint named {name!r}: job {job.id} keeps no checkpoint at that step", param=param)
    canonical = checkpoint_name(job, checkpoint.step)
    return TrainedAdapter(canonical, job, checkpoint, checkpoint.adapter_key, job.base_model)


def _adapter_artifact(session: Session, job: Job) -> Artifact | None:
    return session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == artifacts.ADAPTER))


def _final(session: Session, job: Job, name: str, param: str) -> TrainedAdapter:
    if job.status != JobStatus.SUCCEEDED.value:
        raise Conflict(
            f"Fine-tuned model {name!r} is not ready: its job {job.id} is {job.status}, and only a job that "
            "succeeded has a fine-tuned model (its checkpoints can be named with :ckpt-step-<step>)",
            param=param,
            code="model_not_ready",
        )
    artifact = _adapter_artifact(session, job)
    if artifact is None:
        raise NotFound(f"Fine-tuned model {name!r} was deleted", param=param, code="model_not_found")
    return TrainedAdapter(model_name(job), job, None, artifact.storage_key, job.base_model)


def find(session: Session, org_id: str, name: str, param: str) -> TrainedAdapter:
    """The adapter that `name` stands for, among the organization's: 404 for another
    organization's (it is not told apart from one that does not exist), 409 for a
    fine-tuned model whose job has not succeeded."""
    if name.startswith(CHECKPOINT_ID_PREFIX):
        row = session.execute(
            select(Checkpoint, Job)
            .join(Job, Job.id == Checkpoint.job_id)
            .where(Checkpoint.id == name, Job.organization_id == org_id)
        ).first()
        if row is None:
            raise NotFound(f"No checkpoint with id {name!r}", param=param)
        return _from_checkpoint(row[1], row[0], name, param)
    if not name.startswith(PREFIX):
        raise NotFound(f"{name!r} names no fine-tuned model or checkpoint (ft:..., ftckpt-...)", param=param)
    head, _, last = name.rpartition(":")
    if last.startswith(CHECKPOINT_MARK) and last[len(CHECKPOINT_MARK) :].isdigit():
        job = _job_of(session, org_id, head.rpartition(":")[2], head, param)
        if head != model_name(job):
            raise _no_such_name(name, param)
        step = int(last[len(CHECKPOINT_MARK) :])
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step))
        return _from_checkpoint(job, checkpoint, name, param)
    job = _job_of(session, org_id, last, name, param)
    if name != model_name(job):
        raise _no_such_name(name, param)
    return _final(session, job, name, param)


def continued_from(model: str, from_checkpoint: str | None) -> tuple[str, str] | None:
    """The adapter a job continues training, by name, and the request's field that names
    it: `from_checkpoint`, else `model` when it names a fine-tuned model or a checkpoint;
    None for a job that trains a new adapter."""
    if from_checkpoint is not None:
        return from_checkpoint, "from_checkpoint"
    return (model, "model") if is_fine_tuned_name(model) else None


def hold(session: Session, adapter: TrainedAdapter, param: str) -> None:
    """Keep `adapter` from being deleted until this transaction (which creates a job or a
    merge that uses it) commits: its job's row is locked, as deleting its model, its job
    or one of its checkpoints locks it before looking for users (core.jobs.lock_job). A
    deletion that committed first is seen here."""
    lock_job(session, adapter.job.organization_id, adapter.job.id)
    still: Select[int] = (
        select(Checkpoint.pk).where(Checkpoint.id == adapter.checkpoint.id)
        if adapter.checkpoint is not None
        else select(Artifact.pk).where(Artifact.job_id == adapter.job.id, Artifact.kind == artifacts.ADAPTER)
    )
    if session.scalar(still) is None:
        raise _no_such_name(adapter.name, param)


def checkpoint_id(session: Session, adapter: TrainedAdapter) -> str | None:
    """The checkpoint `adapter` is: a checkpoint's own id or, for a final adapter, its
    job's last checkpoint's (None for a job published before final adapters were
    recorded as checkpoints)."""
    if adapter.checkpoint is not None:
        return adapter.checkpoint.id
    final = select(Checkpoint.id).where(Checkpoint.job_id == adapter.job.id)
    return session.scalar(final.where(Checkpoint.adapter_key == adapter.adapter_key))


# -- the organization's fine-tuned models as objects ---------------------------------------


def _models(org_id: str) -> Select[Job]:
    """The organization's fine-tuned models: its succeeded jobs whose adapter is kept."""
    kept = and_(Artifact.job_id == Job.id, Artifact.kind == artifacts.ADAPTER)
    return select(Job).join(Artifact, kept).where(Job.organization_id == org_id, Job.status == JobStatus.SUCCEEDED)


def list_models(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[Job], bool]:
    """The jobs of the organization's fine-tuned models, newest first; `after`: the name
    of the last model of the previous page."""
    cursor = None
    if after is not None:
        job = session.scalar(_models(org_id).where(Job.id == after.rpartition(":")[2]))
        if job is None or model_name(job) != after:
            raise NotFound(f"cursor {after!r} does not name an object of this list", param="after")
        cursor = job.id
    return page(session, _models(org_id), Job, cursor, limit)


def get_model(session: Session, org_id: str, name: str, param: str) -> Job:
    """The job of the organization's fine-tuned model `name` (a checkpoint is no model:
    it is listed with its job's checkpoints)."""
    adapter = find(session, org_id, name, param)
    if adapter.checkpoint is not None:
        raise NotFound(
            f"{name!r} is a checkpoint of job {adapter.job.id}, not a fine-tuned model; its checkpoints are at "
            f"GET /v1/fine_tuning/jobs/{adapter.job.id}/checkpoints",
            param=param,
            code="model_not_found",
        )
    return adapter.job


def users(session: Session, job: Job, checkpoint: Checkpoint | None = None) -> list[str]:
    """What uses the adapters of `job` now (its fine-tuned model or any of its
    checkpoints; only `checkpoint`, when given), each as "job <id> (<status>) continues
    <field> <name>": the active jobs that continue one of them (merges that are to read
    them: core.merges.refuse_while_merging)."""
    active = [s.value for s in ACTIVE]
    query = select(Job).where(Job.source_job_id == job.id, Job.status.in_(active)).order_by(Job.pk)
    if checkpoint is not None:
        query = query.where(Job.source_checkpoint_id == checkpoint.id)
    described = []
    for user in session.scalars(query):
        name, field = continued_from(user.model, user.spec.get("from_checkpoint")) or (user.model, "model")
        described.append(f"job {user.id} ({user.status}) continues {field} {name}")
    return described
