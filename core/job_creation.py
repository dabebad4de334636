"""Job creation: check what is cheap (the spec, what it refers to: model, files, the
adapter it continues (core.continued_training); the quotas of active jobs and stored
bytes; whether a live worker can run it, when its base model's shape is known here:
core.routing), store the job in `validating_files` with a provisional resolved spec, and send
it to the pre-flight queue once committed. The tokenizer work runs in a pre-flight
worker (core.job_preflight), so creation answers at once whatever the file's size."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from core import files, fine_tuned_models, registered_models, registry, routing, worker_registry
from core.auth import take_turn
from core.continued_training import starting_adapter, trained_settings
from core.db import session_scope
from core.errors import ActiveJobsQuotaExceeded, Conflict, InvalidRequest
from core.evaluations import examples_file, refuse_multitask
from core.events import add_event
from core.fine_tuned_models import TrainedAdapter
from core.ids import new_id
from core.jobs import count_active, publish
from core.models import File, Job
from core.settings import get_settings
from core.specs import JobSpec, ResolvedSpec, check_data_fits_method, resolve, training_examples
from core.states import JobStatus
from core.tasks import FileTasks, job_tasks
from core.usage import check_room_for_outputs


def _check_format(spec: JobSpec, file: File, param: str) -> None:
    check_data_fits_method(spec.method.type, file.format, param, file.id)
    named = spec.qlora.data.format
    if named != "auto" and named != file.format:
        raise InvalidRequest(
            f"qlora.data.format is {named!r} but {param} {file.id} was validated as {file.format!r}; upload it "
            f"again with format={named} or leave qlora.data.format at auto",
            param="qlora.data.format",
            code="format_mismatch",
        )


def _file_tasks(file: File, param: str) -> FileTasks:
    return FileTasks(param, file.id, file.tasks.keys() if file.tasks else None)


def _base_model(session: Session, org_id: str, spec: JobSpec, start: TrainedAdapter | None) -> str:
    """The base model the job trains on (the service's or one the organization
    registered); for a continued adapter, its own base, which must still be there."""
    base = start.base_model if start else spec.model
    try:
        registered_models.resolve_for(session, org_id, base)
    except InvalidRequest as refusal:
        if start is None:
            raise
        raise Conflict(
            f"{start.name} was trained on the base model {base!r}, which is no longer available: {refusal.message}",
            param="from_checkpoint" if spec.from_checkpoint else "model",
            code="base_model_not_found",
        ) from None
    return base


def _check_active_jobs_quota(session: Session, org_id: str) -> None:
    """Creations for one organization take turns from here to their commit (its row is
    locked first), so concurrent creates cannot all count the same active jobs."""
    take_turn(session, org_id)
    limit = get_settings().max_active_jobs_per_org
    active = count_active(session, org_id)
    if active >= limit:
        raise ActiveJobsQuotaExceeded(
            f"The organization already has {active} queued or running jobs, its limit of concurrent jobs; "
            "wait for one to finish or cancel one",
            param="max_active_jobs_per_org",
        )


def _placement(session: Session, base: str, spec: ResolvedSpec) -> routing.Placement | None:
    """Where the job's training will go, refusing a job that no live worker can run,
    when its base model is a local one (its config.json is read here; no torch). Other
    models, and the final placement, are the pre-flight's (its batch size may change)."""
    config = registry.local_config(base)
    if config is None:
        return None
    estimate = routing.estimate_job(config, spec)
    return routing.check_servable(estimate, spec.qlora.resources.gpus, worker_registry.live_workers(session))


def create_job(session: Session, org_id: str, spec: JobSpec) -> Job:
    """Validate the references of a spec and store the job in `validating_files`.

    The caller commits and then publishes the job id to the pre-flight queue
    (`submit_job` does both): a message must never name a job that is not yet visible
    to the worker.
    """
    start = starting_adapter(session, org_id, spec.model, spec.from_checkpoint)
    base = _base_model(session, org_id, spec, start)
    trained = trained_settings(spec.qlora, start) if start else None
    training = files.usable_for_training(session, org_id, spec.training_file, "training_file")
    _check_format(spec, training, "training_file")
    validation = None
    if spec.validation_file:
        validation = files.usable_for_training(session, org_id, spec.validation_file, "validation_file")
        _check_format(spec, validation, "validation_file")
    if (evaluation := spec.qlora.evaluation) is not None:
        refuse_multitask((trained or spec.qlora).adapter.type, InvalidRequest, "qlora.evaluation")
        examples_file(session, org_id, evaluation.file, spec.validation_file, "qlora.evaluation.file")
    tasks = job_tasks(
        (trained or spec.qlora).adapter.type,
        _file_tasks(training, "training_file"),
        _file_tasks(validation, "validation_file") if validation else None,
        trained.data.tasks if trained else None,
    )
    seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
    # Provisional: every example of the file counted; the pre-flight resolves the
    # hyperparameters again from the examples that keep a trained token.
    n_examples = training_examples(training.n_examples, spec.qlora.data.validation_split or 0.0)
    resolved = resolve(
        spec,
        n_examples=n_examples,
        seed=seed,
        data_format=files.data_file(training).format,
        trained=trained,
        tasks=tasks,
    )
    placement = _placement(session, base, resolved)
    check_room_for_outputs(session, org_id)
    # Last before the insert: creations of one organization take turns from here to
    # their commit, so the turn is kept short.
    _check_active_jobs_quota(session, org_id)
    job = Job(
        id=new_id("ftjob"),
        organization_id=org_id,
        model=spec.model,
        base_model=base,
        source_job_id=start.job.id if start else None,
        source_checkpoint_id=fine_tuned_models.checkpoint_id(session, start) if start else None,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        status=JobStatus.VALIDATING_FILES.value,
        spec=resolved.model_dump(mode="json"),
        request=spec.model_dump(mode="json"),
        seed=seed,
        suffix=spec.suffix,
        metadata_=spec.metadata,
        result_files=[],
        placement=placement.as_json() if placement else None,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"Created fine-tuning job {job.id}")
    if start:
        add_event(
            session,
            job.id,
            f"Continues training {start.name} on its base model {base} (its adapter and quantization settings)",
            data={"adapter": start.name, "source_job_id": start.job.id, "base_model": base},
        )
    add_event(session, job.id, "Validating files: waiting for a pre-flight worker to read the training data")
    session.refresh(job)
    return job


def submit_job(org_id: str, spec: JobSpec) -> Job:
    """Create and commit the job, then publish its id to the pre-flight queue: the worker
    never gets a message for a job it cannot read. If the broker is unreachable the job
    waits in `validating_files`, says so, and the maintenance loop sends it later."""
    with session_scope() as session:
        job = create_job(session, org_id, spec)
    if not publish(job.id, JobStatus.VALIDATING_FILES):
        with session_scope() as session:
            add_event(
                session,
                job.id,
                "The queue broker could not be reached; the job is sent again when it is back",
                level="warn",
            )
    return job
