"""Fine-tuned models and their checkpoints by name, as the API hands them out: what
`GET /v1/models/{id}`, a job's `model` and `from_checkpoint`, and a merge accept.

Names (OpenAI's shapes): a job's `fine_tuned_model` is `ft:<base>:<org>[:<suffix>]:<job id>`
and a checkpoint's `fine_tuned_model_checkpoint` is that name plus `:ckpt-step-<step>`; a
checkpoint's id (`ftckpt-...`) names it too."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import artifacts
from core.errors import Conflict, NotFound
from core.jobs import fine_tuned_model_name as model_name
from core.models import Artifact, Checkpoint, Job
from core.states import JobStatus

PREFIX = "ft:"
CHECKPOINT_MARK = "ckpt-step-"


def checkpoint_name(job: Job, step: int) -> str:
    return f"{model_name(job)}:{CHECKPOINT_MARK}{step}"


def is_fine_tuned_name(name: str) -> bool:
    return name.startswith(PREFIX) or name.startswith("ftckpt-")


@dataclass(frozen=True)
class TrainedAdapter:
    """An adapter a job trained: its final one (`checkpoint` None) or a checkpoint's."""

    name: str
    job: Job
    checkpoint: Checkpoint | None
    adapter_key: str
    # The base model the adapter applies to (a local model's name or a hub id).
    base_model: str


def _job_of(session: Session, org_id: str, job_id: str, name: str, param: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.organization_id == org_id))
    if job is None or not name.startswith(model_name(job)):
        raise NotFound(f"No fine-tuned model or checkpoint named {name!r}", param=param, code="model_not_found")
    return job


def _from_checkpoint(job: Job, checkpoint: Checkpoint | None, name: str, param: str) -> TrainedAdapter:
    if checkpoint is None:
        raise NotFound(f"No checkpoint named {name!r}: job {job.id} keeps no checkpoint at that step", param=param)
    return TrainedAdapter(checkpoint_name(job, checkpoint.step), job, checkpoint, checkpoint.adapter_key, job.model)


def _final(session: Session, job: Job, name: str, param: str) -> TrainedAdapter:
    if job.status != JobStatus.SUCCEEDED.value:
        raise Conflict(
            f"Fine-tuned model {name!r} is not ready: its job {job.id} is {job.status}, and only a job that "
            "succeeded has a fine-tuned model (its checkpoints can be named with :ckpt-step-<step>)",
            param=param,
            code="model_not_ready",
        )
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == artifacts.ADAPTER))
    if artifact is None:
        raise NotFound(f"Fine-tuned model {name!r} has no adapter any more", param=param, code="model_not_found")
    return TrainedAdapter(model_name(job), job, None, artifact.storage_key, job.model)


def find(session: Session, org_id: str, name: str, param: str) -> TrainedAdapter:
    """The adapter that `name` stands for, among the organization's: 404 for another
    organization's (it is not told apart from one that does not exist), 409 for a
    fine-tuned model whose job has not succeeded."""
    if name.startswith("ftckpt-"):
        row = session.execute(
            select(Checkpoint, Job)
            .join(Job, Job.id == Checkpoint.job_id)
            .where(Checkpoint.id == name, Job.organization_id == org_id)
        ).first()
        if row is None:
            raise NotFound(f"No checkpoint with id {name!r}", param=param)
        return _from_checkpoint(row[1], row[0], name, param)
    if not name.startswith(PREFIX):
        raise NotFound(f"{name!r} is not a fine-tuned model name (ft:...)", param=param, code="model_not_found")
    head, _, last = name.rpartition(":")
    if last.startswith(CHECKPOINT_MARK) and last[len(CHECKPOINT_MARK) :].isdigit():
        job = _job_of(session, org_id, head.rpartition(":")[2], head, param)
        if head != model_name(job):
            raise NotFound(f"No fine-tuned model or checkpoint named {name!r}", param=param, code="model_not_found")
        step = int(last[len(CHECKPOINT_MARK) :])
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id, Checkpoint.step == step))
        return _from_checkpoint(job, checkpoint, name, param)
    job = _job_of(session, org_id, last, name, param)
    if name != model_name(job):
        raise NotFound(f"No fine-tuned model or checkpoint named {name!r}", param=param, code="model_not_found")
    return _final(session, job, name, param)
