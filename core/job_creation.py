"""Job creation: check what a spec refers to (model, files, checkpoint, quota), run the
tokenizer pre-flight over the training data, resolve the spec, store the job queued,
and publish it once committed."""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from core import files, registry
from core.checkpoints import find_for_organization
from core.datasets import DataFile, examples_of
from core.db import session_scope
from core.errors import ActiveJobsQuotaExceeded, InvalidRequest
from core.events import add_event
from core.ids import new_id
from core.jobs import count_active, publish, transition
from core.models import File, Job
from core.settings import get_settings
from core.specs import JobSpec, ResolvedQLoRA, ResolvedSpec, resolve
from core.states import JobStatus
from core.tokenization import prepare_tokenizer, statistics


def _check_format(spec: JobSpec, file: File, param: str) -> None:
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
    sha256: str,
    data: DataFile,
    max_seq_length: int,
    train_on_inputs: bool,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The tokenizer's checks and the data's token statistics: the same for the same
    file (by content), model (as it is on disk) and settings, so a sweep of jobs over
    one file pays for them once per API process."""
    prepared = prepare_tokenizer(model_ref)
    stats = statistics(prepared, examples_of(data), max_seq_length, train_on_inputs)
    stats |= {"chat_template": prepared.template_source, "eos_appended": prepared.append_eos}
    return stats, tuple(prepared.notes())


def _preflight(spec: JobSpec, training: File) -> tuple[dict[str, Any], list[str]]:
    """Load the base model's tokenizer, check its template and EOS, and compute the
    training data's token statistics; refuse data with nothing left to train on."""
    model_ref = registry.resolve_model(spec.model)
    training_spec, data = spec.qlora.training, spec.qlora.data
    cached, notes = _token_statistics(
        model_ref,
        registry.modified_at(model_ref),
        training.sha256,
        files.data_file(training),
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


def _checkpoint_settings(session: Session, org_id: str, spec: JobSpec) -> ResolvedQLoRA | None:
    """A job that starts from a checkpoint trains that checkpoint's adapter further: the
    adapter and quantization settings come from the checkpoint's job."""
    if spec.from_checkpoint is None:
        return None
    checkpoint, source = find_for_organization(session, org_id, spec.from_checkpoint)
    if source.model != spec.model:
        raise InvalidRequest(
            f"Checkpoint {checkpoint.id} was trained on {source.model!r}, not {spec.model!r}; an adapter only fits "
            "the base model it was trained on",
            param="from_checkpoint",
            code="checkpoint_model_mismatch",
        )
    return ResolvedSpec.model_validate(source.spec).qlora


def _check_active_jobs_quota(session: Session, org_id: str) -> None:
    limit = get_settings().max_active_jobs_per_org
    active = count_active(session, org_id)
    if active >= limit:
        raise ActiveJobsQuotaExceeded(
            f"The organization already has {active} queued or running jobs, its limit of concurrent jobs; "
            "wait for one to finish or cancel one",
            param="max_active_jobs_per_org",
        )


def create_job(session: Session, org_id: str, spec: JobSpec) -> Job:
    """Validate the references of a spec, store the job with its resolved spec and move
    it to `queued`.

    The caller commits and then publishes the job id (`submit_job` does both): a
    message must never name a job that is not yet visible to the worker.
    """
    _check_active_jobs_quota(session, org_id)
    registry.resolve_model(spec.model)
    trained = _checkpoint_settings(session, org_id, spec)
    training = files.usable_for_training(session, org_id, spec.training_file, "training_file")
    _check_format(spec, training, "training_file")
    if spec.validation_file:
        validation = files.usable_for_training(session, org_id, spec.validation_file, "validation_file")
        _check_format(spec, validation, "validation_file")
    stats, notes = _preflight(spec, training)
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    trainable = stats["examples"] - stats["examples_without_trainable_tokens"]
    if spec.qlora.data.validation_split:
        trainable -= max(1, round(trainable * spec.qlora.data.validation_split))
    resolved = resolve(
        spec, n_examples=max(trainable, 1), seed=seed, data_format=files.data_file(training).format, trained=trained
    )
    job = Job(
        id=new_id("ftjob"),
        organization_id=org_id,
        model=spec.model,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        status=JobStatus.VALIDATING_FILES.value,
        spec=resolved.model_dump(mode="json"),
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


def submit_job(org_id: str, spec: JobSpec) -> Job:
    """Create and commit the job, then publish its id: the worker never gets a message
    for a job it cannot read. If the broker is unreachable the job stays queued, says so,
    and the maintenance loop sends it later."""
    with session_scope() as session:
        job = create_job(session, org_id, spec)
    if not publish(job.id):
        with session_scope() as session:
            add_event(
                session,
                job.id,
                "The queue broker could not be reached; the job is sent again when it is back",
                level="warn",
            )
    return job
