"""Fine-tuning jobs: their states, the only allowed transitions, and the operations the
API offers on them. Every read is scoped by organization here, not in the routes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from core import files, registry
from core.datasets import iter_examples
from core.errors import ActiveJobsQuotaExceeded, Conflict, InvalidRequest, NotFound
from core.events import add_event
from core.ids import new_id, now
from core.models import Job
from core.paging import page
from core.queue import enqueue_job
from core.settings import get_settings
from core.specs import JobSpec
from core.states import ACTIVE, TERMINAL, TRANSITIONS, JobStatus
from core.storage import get_storage
from core.tokenization import prepare_tokenizer, statistics


def transition(
    session: Session,
    job_id: str,
    to: JobStatus,
    *,
    message: str | None = None,
    level: str = "info",
    data: dict[str, Any] | None = None,
    conditions: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """Move a job to `to` if, and only if, its current state allows it (and the extra
    `conditions` hold, such as "this worker still holds the lease").

    One conditional UPDATE, so two racing writers (a cancel and a worker's claim, say)
    cannot both win; returns False when the job was not in a state that may move to
    `to`. An event records every transition.
    """
    sources = [s.value for s, targets in TRANSITIONS.items() if to in targets]
    values["status"] = to.value
    if to in TERMINAL:
        values.setdefault("finished_at", now())
    stmt = update(Job).where(Job.id == job_id, Job.status.in_(sources), *conditions).values(**values)
    if session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(session, job_id, message or f"Job {to.value}", level=level, data=data)  # type: ignore[arg-type]
    return True


def get_job(session: Session, org_id: str, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.organization_id == org_id))
    if job is None:
        raise NotFound(f"No fine-tuning job with id {job_id!r}", param="fine_tuning_job_id")
    return job


def list_jobs(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[Job], bool]:
    return page(session, select(Job).where(Job.organization_id == org_id), Job, after, limit)


def _usable_file(session: Session, org_id: str, file_id: str, param: str) -> files.File:
    file = files.get_file(session, org_id, file_id, param=param)
    if file.purpose != "fine-tune":
        raise InvalidRequest(f"File {file_id} has purpose {file.purpose!r}, not 'fine-tune'", param=param)
    if file.status != files.PROCESSED:
        raise InvalidRequest(
            f"File {file_id} failed validation and cannot be used: {file.status_details}",
            param=param,
            code="invalid_file",
            details=file.problems,
        )
    return file


def _check_format(spec: JobSpec, file: files.File, param: str) -> None:
    named = spec.qlora.data.format
    if named != "auto" and named != file.format:
        raise InvalidRequest(
            f"qlora.data.format is {named!r} but {param} {file.id} was validated as {file.format!r}; upload it "
            f"again with format={named} or leave qlora.data.format at auto",
            param="qlora.data.format",
            code="format_mismatch",
        )


@lru_cache(maxsize=256)
def _token_statistics(
    model_ref: registry.ModelRef,
    model_version: float,
    training: tuple[str, str, str | None, str | None],
    max_seq_length: int,
    train_on_inputs: bool,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The tokenizer's checks and the data's token statistics: the same for the same
    file (by content), model (as it is on disk) and settings, so a sweep of jobs over
    one file pays for them once per API process."""
    prepared = prepare_tokenizer(model_ref)
    _, storage_key, file_type, data_format = training
    with get_storage().open(storage_key) as stream:
        examples = iter_examples(stream, file_type, data_format)  # type: ignore[arg-type]
        stats = statistics(prepared, examples, max_seq_length, train_on_inputs)
    stats |= {"chat_template": prepared.template_source, "eos_appended": prepared.append_eos}
    return stats, tuple(prepared.notes())


def _preflight(spec: JobSpec, training: files.File) -> tuple[dict[str, Any], list[str]]:
    """Load the base model's tokenizer, check its template and EOS, and compute the
    training data's token statistics; refuse data with nothing left to train on."""
    model_ref = registry.resolve_model(spec.model)
    training_spec, data = spec.qlora.training, spec.qlora.data
    cached, notes = _token_statistics(
        model_ref,
        registry.modified_at(model_ref),
        (training.sha256, training.storage_key, training.file_type, training.format),
        training_spec.max_seq_length,
        data.train_on_inputs,
    )
    stats = dict(cached)  # the cached value is shared: never changed in place
    if stats["trainable_tokens"] == 0:
        raise InvalidRequest(
            f"None of the {stats['examples']} examples of {training.id} has a trained token left after "
            f"truncation to max_seq_length={training_spec.max_seq_length} (longest example: "
            f"{stats['tokens_max']} tokens); raise qlora.training.max_seq_length or shorten the prompts",
            param="qlora.training.max_seq_length",
            code="no_trainable_tokens",
        )
    return stats, list(notes)


def _with_checkpoint_adapter(session: Session, org_id: str, spec: JobSpec) -> JobSpec:
    """A job that starts from a checkpoint trains that checkpoint's adapter further: the
    adapter and quantization settings come from the checkpoint's job."""
    if spec.from_checkpoint is None:
        return spec
    from core.checkpoints import find_for_organization

    checkpoint, source = find_for_organization(session, org_id, spec.from_checkpoint)
    if source.model != spec.model:
        raise InvalidRequest(
            f"Checkpoint {checkpoint.id} was trained on {source.model!r}, not {spec.model!r}; an adapter only fits "
            "the base model it was trained on",
            param="from_checkpoint",
            code="checkpoint_model_mismatch",
        )
    trained = JobSpec.model_validate(source.spec).qlora
    qlora = spec.qlora.model_copy(update={"adapter": trained.adapter, "quantization": trained.quantization})
    return spec.model_copy(update={"qlora": qlora})


def _check_active_jobs_quota(session: Session, org_id: str) -> None:
    limit = get_settings().max_active_jobs_per_org
    active = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.organization_id == org_id, Job.status.in_([s.value for s in ACTIVE]))
    )
    if (active or 0) >= limit:
        raise ActiveJobsQuotaExceeded(
            f"The organization already has {active} queued or running jobs, its limit of concurrent jobs; "
            "wait for one to finish or cancel one",
            param="max_active_jobs_per_org",
        )


def create_job(session: Session, org_id: str, spec: JobSpec) -> Job:
    """Validate the references of a spec, store the job and move it to `queued`.

    The caller commits and then enqueues the job id: a message must never name a job
    that is not yet visible to the worker.
    """
    _check_active_jobs_quota(session, org_id)
    registry.resolve_model(spec.model)
    spec = _with_checkpoint_adapter(session, org_id, spec)
    training = _usable_file(session, org_id, spec.training_file, "training_file")
    _check_format(spec, training, "training_file")
    if spec.validation_file:
        _check_format(spec, _usable_file(session, org_id, spec.validation_file, "validation_file"), "validation_file")
    stats, notes = _preflight(spec, training)
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    trainable = stats["examples"] - stats["examples_without_trainable_tokens"]
    if spec.qlora.data.validation_split:
        trainable -= max(1, round(trainable * spec.qlora.data.validation_split))
    resolved = spec.resolved(max(trainable, 1), seed)
    job = Job(
        id=new_id("ftjob"),
        organization_id=org_id,
        model=spec.model,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        status=JobStatus.VALIDATING_FILES.value,
        spec=resolved.model_dump(mode="json", exclude={"hyperparameters"}),
        seed=seed,
        suffix=spec.suffix,
        metadata_=spec.metadata,
        result_files=[],
        statistics=stats,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job {job.id}")
    if spec.from_checkpoint:
        add_event(
            session,
            job.id,
            f"Starts from the adapter of checkpoint {spec.from_checkpoint} (its adapter and quantization settings)",
        )
    add_event(
        session,
        job.id,
        f"Training data: {stats['examples']} examples, {stats['tokens_total']} tokens "
        f"({stats['trainable_tokens']} trained), {stats['truncated_examples']} truncated at "
        f"max_seq_length={stats['max_seq_length']}",
        data=stats,
    )
    for note in notes:
        add_event(session, job.id, note, level="warn")
    transition(session, job.id, JobStatus.QUEUED, message="Validated training files; job queued")
    session.refresh(job)
    return job


def publish(session: Session, job_id: str) -> bool:
    """Send a committed queued job's id to the broker and note when. A job whose message
    could not be sent keeps `enqueued_at` empty and the maintenance loop sends it again."""
    if not enqueue_job(job_id):
        return False
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED.value).values(enqueued_at=time.time())
    )
    session.commit()
    return True


def submit_job(session: Session, org_id: str, spec: JobSpec) -> Job:
    """Create, commit, then publish the id: the worker never gets a message for a job
    it cannot read. If the broker is unreachable the job stays queued and says so."""
    job = create_job(session, org_id, spec)
    session.commit()
    if not publish(session, job.id):
        add_event(
            session,
            job.id,
            "The queue broker could not be reached; the job is sent again when it is back",
            level="warn",
        )
        session.commit()
    session.refresh(job)
    return job


def cancel_job(session: Session, org_id: str, job_id: str) -> Job:
    """Cancel at once; a running worker sees the state at its next step and stops. Its
    checkpoints are kept (their adapters stay downloadable)."""
    job = get_job(session, org_id, job_id)
    if not transition(session, job.id, JobStatus.CANCELLED, message="Job cancelled by the user"):
        session.refresh(job)
        raise Conflict(f"Job {job_id} is already {job.status} and cannot be cancelled", code="job_not_cancellable")
    session.refresh(job)
    return job


def pause_job(session: Session, org_id: str, job_id: str) -> Job:
    """A queued job pauses at once; a running one is asked to: its worker saves a
    checkpoint at the end of the current step, frees the GPU and moves it to `paused`."""
    job = get_job(session, org_id, job_id)
    queued = [Job.status == JobStatus.QUEUED.value]  # a running job is paused by its worker
    if not transition(
        session, job.id, JobStatus.PAUSED, message="Job paused by the user", conditions=queued, enqueued_at=None
    ):
        asked = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == JobStatus.RUNNING.value, Job.pause_requested.is_(False))
            .values(pause_requested=True)
        )
        if asked.rowcount:  # type: ignore[attr-defined]
            add_event(session, job.id, "Pause requested: the worker checkpoints and stops after the current step")
        else:
            session.refresh(job)
            if not (job.status == JobStatus.RUNNING and job.pause_requested):  # asking twice is fine
                raise Conflict(f"Job {job_id} is {job.status} and cannot be paused", code="job_not_pausable")
    session.commit()
    session.refresh(job)
    return job


def resume_job(session: Session, org_id: str, job_id: str) -> Job:
    """paused -> queued; the next worker continues from the newest checkpoint."""
    job = get_job(session, org_id, job_id)
    if not transition(
        session, job.id, JobStatus.QUEUED, message="Job resumed by the user", pause_requested=False, enqueued_at=None
    ):
        session.refresh(job)
        raise Conflict(f"Job {job_id} is {job.status}, not paused; only paused jobs resume", code="job_not_paused")
    session.commit()
    publish(session, job.id)
    session.refresh(job)
    return job


def fine_tuned_model_name(job: Job) -> str:
    """OpenAI's naming: ft:<base>:<org>[:<suffix>]:<job id>."""
    parts = ["ft", job.model, job.organization_id] + ([job.suffix] if job.suffix else []) + [job.id]
    return ":".join(parts)
