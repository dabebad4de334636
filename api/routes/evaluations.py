"""Evaluations of a job's fine-tuned model against its base model: started, listed,
read and cancelled under the job (`/v1/fine_tuning/jobs/{id}/evaluations`); a training
worker runs them. Their CSV is a result file (`GET /v1/files/{id}/content`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from fastapi.concurrency import run_in_threadpool

from api import idempotent_requests
from api.deps import Limit, OrgDep, ReadSessionDep, SessionDep
from api.openapi import ModelRoute
from api.schemas import EvaluationObject, ListPage
from core import evaluations
from core.idempotency import fingerprint
from core.specs import EvaluationRequest

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["evaluations"], route_class=ModelRoute)

EVALUATIONS = "POST /v1/fine_tuning/jobs/{id}/evaluations"


def _submit(org: str, job_id: str, request: EvaluationRequest) -> EvaluationObject:
    return EvaluationObject.from_row(evaluations.submit_evaluation(org, job_id, request))


@router.post("/{fine_tuning_job_id}/evaluations")
async def create_evaluation(
    fine_tuning_job_id: str,
    org: OrgDep,
    request: Annotated[EvaluationRequest | None, Body()] = None,
    idempotency_key: idempotent_requests.IdempotencyKeyHeader = None,
) -> EvaluationObject | Response:
    """Evaluate the job's fine-tuned model against its base model on the job's
    validation file (or `file`): loss and perplexity on the trained tokens, exact match
    and token F1 of greedy answers against each example's last assistant turn. A
    training worker runs it; the evaluation answers at once, `queued`. The body is
    optional. `409` unless the job succeeded and its model is kept."""
    asked = request or EvaluationRequest()
    wanted = fingerprint({"job": fine_tuning_job_id, **asked.model_dump(mode="json")})

    async def submit(replaying: bool) -> tuple[str, EvaluationObject | None]:
        return wanted, None if replaying else await run_in_threadpool(_submit, org, fine_tuning_job_id, asked)

    return await idempotent_requests.run_once(org, EVALUATIONS, idempotency_key, EvaluationObject, submit)


@router.get("/{fine_tuning_job_id}/evaluations")
def list_evaluations(
    fine_tuning_job_id: str, session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[EvaluationObject]:
    """The job's evaluations, newest first."""
    rows, has_more = evaluations.list_evaluations(session, org, fine_tuning_job_id, after, limit)
    return ListPage[EvaluationObject].of([EvaluationObject.from_row(e) for e in rows], has_more)


@router.get("/{fine_tuning_job_id}/evaluations/{evaluation_id}")
def get_evaluation(
    fine_tuning_job_id: str, evaluation_id: str, session: ReadSessionDep, org: OrgDep
) -> EvaluationObject:
    return EvaluationObject.from_row(evaluations.get_evaluation(session, org, fine_tuning_job_id, evaluation_id))


@router.post("/{fine_tuning_job_id}/evaluations/{evaluation_id}/cancel")
def cancel_evaluation(
    fine_tuning_job_id: str, evaluation_id: str, session: SessionDep, org: OrgDep
) -> EvaluationObject:
    """A queued or running evaluation stops; a running one's results are discarded."""
    return EvaluationObject.from_row(evaluations.cancel_evaluation(session, org, fine_tuning_job_id, evaluation_id))
