"""Evaluations, as users see them: `POST /v1/fine_tuning/jobs/{id}/evaluations` checks
what is cheap (the job is the organization's and succeeded, its fine-tuned model is
kept, the examples are a valid file with reference answers), stores the evaluation
`queued` and sends it to the training queue once committed. A training worker runs it
(worker.evaluation_runner) under a lease, as merges run (core.leased_runs); its log is
the job's: each entry names the evaluation. Reads and cancel are here too, scoped by
organization."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import files, fine_tuned_models, jobs
from core.db import session_scope
from core.errors import Conflict, InvalidRequest, NotFound, ServiceError
from core.events import add_event
from core.ids import new_id
from core.leased_runs import LeasedRuns
from core.models import Evaluation, File
from core.paging import page
from core.queue import RUN_EVALUATION_TASK
from core.specs import EvaluationRequest, ResolvedSpec
from core.states import EVALUATION_TRANSITIONS, EvaluationStatus, JobStatus, Level
from core.tasks import MULTITASK
from core.usage import check_room_for_outputs

ACTIVE_EVALUATIONS = [EvaluationStatus.QUEUED.value, EvaluationStatus.RUNNING.value]
# Formats whose examples end with no reference answer to compare a generated one with.
NO_REFERENCE_FORMATS = ("text",)


def add_evaluation_event(
    session: Session, evaluation_id: str, message: str, *, level: Level = "info", data: dict[str, Any] | None = None
) -> None:
    """An entry of the job's log, naming the evaluation."""
    job_id = session.scalar(select(Evaluation.job_id).where(Evaluation.id == evaluation_id))
    if job_id is not None:  # else its job (and the evaluation with it) was deleted
        data = {"evaluation_id": evaluation_id} | (data or {})
        add_event(session, job_id, f"Evaluation {evaluation_id}: {message}", level=level, data=data)


RUNS = LeasedRuns(Evaluation, EVALUATION_TRANSITIONS, RUN_EVALUATION_TASK, "evaluation", add_evaluation_event)


def get_evaluation(session: Session, org_id: str, job_id: str, evaluation_id: str) -> Evaluation:
    """One of the job's evaluations; 404 for a job that is not the organization's (as
    for its checkpoints), then for an evaluation that is not the job's."""
    job = jobs.get_job(session, org_id, job_id)
    evaluation = session.scalar(select(Evaluation).where(Evaluation.id == evaluation_id, Evaluation.job_id == job.id))
    if evaluation is None:
        raise NotFound(f"Job {job_id} has no evaluation with id {evaluation_id!r}", param="evaluation_id")
    return evaluation


def list_evaluations(
    session: Session, org_id: str, job_id: str, after: str | None, limit: int
) -> tuple[list[Evaluation], bool]:
    """The job's evaluations, newest first; 404 for a job that is not the organization's."""
    job = jobs.get_job(session, org_id, job_id)
    return page(session, select(Evaluation).where(Evaluation.job_id == job.id), Evaluation, after, limit)


def examples_file(
    session: Session, org_id: str, file_id: str | None, validation_file: str | None, param: str = "file"
) -> File:
    """The file to evaluate on: the one asked for, else the job's validation file; 400
    (naming `param`) when there is none or it holds no reference answers."""
    if file_id is None and validation_file is None:
        raise InvalidRequest(
            f"The job has no validation_file: name the examples to evaluate on in `{param}` (a file id)",
            param=param,
            code="missing_file",
        )
    file = files.usable_for_training(session, org_id, file_id or str(validation_file), param)
    if file.format in NO_REFERENCE_FORMATS:
        raise InvalidRequest(
            f"File {file.id} is in format {file.format!r}: its examples have no reference answer to compare the "
            "models' answers with; use a file of conversations (chat, prompt_completion, qa, ...)",
            param=param,
            code="invalid_file",
        )
    return file


def refuse_multitask(adapter_type: str, error: type[ServiceError], param: str) -> None:
    """A multitask prompt tuning adapter chooses its prompt per example by its task,
    which evaluations do not pass yet."""
    if adapter_type == MULTITASK:
        raise error(
            f"A {MULTITASK} adapter chooses its prompt per example by its task: evaluations do not run it yet",
            param=param,
            code="adapter_not_supported",
        )


def create_evaluation(session: Session, org_id: str, job_id: str, request: EvaluationRequest) -> Evaluation:
    """Check the evaluation and store it `queued` (the caller commits, then publishes it).
    404: no such job of the organization; 409: its job has not succeeded, its adapter is
    a multitask prompt tuning one, or its fine-tuned model was deleted; 400: no examples
    to evaluate on."""
    job = jobs.get_job(session, org_id, job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(
            f"Job {job_id} is {job.status}; only a job that succeeded has a fine-tuned model to evaluate",
            param="fine_tuning_job_id",
            code="job_not_succeeded",
        )
    try:
        adapter = fine_tuned_models.find(session, org_id, jobs.fine_tuned_model_name(job), "fine_tuning_job_id")
        fine_tuned_models.hold(session, adapter, "fine_tuning_job_id")  # not deleted before this is committed
    except NotFound:
        raise Conflict(
            f"The fine-tuned model of job {job_id} was deleted; there is nothing to evaluate",
            param="fine_tuning_job_id",
            code="model_deleted",
        ) from None
    refuse_multitask(ResolvedSpec.model_validate(job.spec).qlora.adapter.type, Conflict, "fine_tuning_job_id")
    file = examples_file(session, org_id, request.file, job.validation_file)
    check_room_for_outputs(session, org_id, "An evaluation's result file")
    evaluation = Evaluation(
        id=new_id("fteval"),
        organization_id=org_id,
        job_id=job.id,
        model=adapter.name,
        adapter_key=adapter.adapter_key,
        base_model=adapter.base_model,
        file_id=file.id,
        max_examples=request.max_examples,
        max_tokens=request.max_tokens,
        sample_size=request.sample_size,
        status=EvaluationStatus.QUEUED.value,
        result_files=[],
    )
    session.add(evaluation)
    session.flush()
    add_evaluation_event(
        session,
        evaluation.id,
        f"{adapter.name} against its base model {adapter.base_model} on {file.id} queued",
        data={"file": file.id},
    )
    session.refresh(evaluation)
    return evaluation


def submit_evaluation(org_id: str, job_id: str, request: EvaluationRequest) -> Evaluation:
    """Create and commit the evaluation, then send it to the training queue; one whose
    message could not be sent waits `queued` and the maintenance loop sends it later."""
    with session_scope() as session:
        evaluation = create_evaluation(session, org_id, job_id, request)
    if not RUNS.publish(evaluation.id):
        with session_scope() as session:
            add_evaluation_event(
                session,
                evaluation.id,
                "The queue broker could not be reached; the evaluation is sent again when it is back",
                level="warn",
            )
    return evaluation


def cancel_evaluation(session: Session, org_id: str, job_id: str, evaluation_id: str) -> Evaluation:
    """A queued evaluation is cancelled at once; a running one too, and its worker's
    results are discarded (their publication is conditioned on it still running)."""
    evaluation = get_evaluation(session, org_id, job_id, evaluation_id)
    if not RUNS.move(session, evaluation.id, EvaluationStatus.CANCELLED, message="cancelled by the user"):
        session.refresh(evaluation)
        raise Conflict(f"Evaluation {evaluation_id} is already {evaluation.status}", code="evaluation_not_cancellable")
    session.refresh(evaluation)
    return evaluation


def refuse_while_evaluating(session: Session, job_id: str, what: str) -> None:
    """A job's fine-tuned model stays while a queued or running evaluation is to read it
    (deleting the job or its model calls this)."""
    active = select(Evaluation.id).where(Evaluation.job_id == job_id, Evaluation.status.in_(ACTIVE_EVALUATIONS))
    evaluation_id = session.scalar(active.limit(1))
    if evaluation_id is not None:
        raise Conflict(
            f"{what}: evaluation {evaluation_id} is to evaluate its fine-tuned model; cancel the evaluation or "
            "wait until it has finished",
            code="evaluation_in_progress",
        )


def result_file_ids(session: Session, job_id: str) -> list[str]:
    """The result files of the job's evaluations (deleted with the job)."""
    rows = session.scalars(select(Evaluation.result_files).where(Evaluation.job_id == job_id))
    return [file_id for ids in rows for file_id in ids]
