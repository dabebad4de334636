from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api import idempotent_requests, streams
from api.charts import MetricsChart
from api.deps import METADATA, Limit, MetadataFilter, OrgDep, ReadSessionDep, SessionDep
from api.openapi import ModelRoute, streamed
from api.schemas import (
    CheckpointObject,
    DeletedCheckpoint,
    DeletedJob,
    JobEventObject,
    JobObject,
    ListPage,
    MetricPoint,
)
from core import artifacts, checkpoints, events, job_cleanup, job_creation, jobs
from core.db import read_scope
from core.events import Split
from core.idempotency import fingerprint
from core.models import Artifact, Checkpoint, Job
from core.specs import JobSpec
from core.states import JobStatus
from core.storage import get_storage

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], route_class=ModelRoute)


def download_headers(filename: str, size: int, sha256: str) -> dict[str, str]:
    return {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(size),
        "X-Artifact-SHA256": sha256,
    }


def _artifact_headers(a: Artifact) -> dict[str, str]:
    return download_headers(a.filename, a.bytes, a.sha256)


def _checkpoint_headers(c: Checkpoint) -> dict[str, str]:
    return download_headers(f"{c.job_id}-step-{c.step}-adapter.tar.gz", c.adapter_bytes, c.adapter_sha256)


JOBS = "POST /v1/fine_tuning/jobs"


def _submit(org: str, spec: JobSpec) -> JobObject:
    return JobObject.from_row(job_creation.submit_job(org, spec))


@router.post("")
async def create_job(
    spec: JobSpec, org: OrgDep, idempotency_key: idempotent_requests.IdempotencyKeyHeader = None
) -> JobObject | Response:
    asked = fingerprint(spec.model_dump(mode="json"))

    async def submit(replaying: bool) -> tuple[str, JobObject | None]:
        return asked, None if replaying else await run_in_threadpool(_submit, org, spec)

    return await idempotent_requests.run_once(org, JOBS, idempotency_key, JobObject, submit)


def _job_objects(session: Session, rows: list[Job]) -> list[JobObject]:
    """The jobs as the API shows them, queued ones with their place in the queue."""
    positions = jobs.queue_positions(session, [j.id for j in rows if j.status == JobStatus.QUEUED])
    return [JobObject.from_row(j, positions.get(j.id)) for j in rows]


METADATA_FILTER = METADATA.openapi_parameter(
    "Only jobs whose metadata has this value at this key, e.g. `metadata[team]=search` (several keys: all must "
    "match), as the OpenAI client's `jobs.list(metadata={...})` sends it"
)


@router.get("", openapi_extra={"parameters": [METADATA_FILTER]})
def list_jobs(
    session: ReadSessionDep,
    org: OrgDep,
    metadata: MetadataFilter,
    after: str | None = None,
    limit: Limit = 20,
    status: JobStatus | None = None,
) -> ListPage[JobObject]:
    """The organization's jobs, newest first; only those in `status` and matching the
    `metadata[key]=value` filters, when given."""
    rows, has_more = jobs.list_jobs(session, org, after, limit, status, metadata)
    return ListPage[JobObject].of(_job_objects(session, rows), has_more)


@router.get("/{fine_tuning_job_id}")
def get_job(fine_tuning_job_id: str, session: ReadSessionDep, org: OrgDep) -> JobObject:
    return JobObject.from_row(*jobs.get_job_and_queue_position(session, org, fine_tuning_job_id))


@router.delete("/{fine_tuning_job_id}")
def delete_job(fine_tuning_job_id: str, org: OrgDep) -> DeletedJob:
    """Delete a finished job with everything it stored: events, metrics, checkpoints,
    adapter and result files (their bytes too). `409` while it is active (cancel it
    first) or while an active job starts from one of its checkpoints."""
    job_cleanup.delete_job(get_storage(), org, fine_tuning_job_id)
    return DeletedJob(id=fine_tuning_job_id)


@router.post("/{fine_tuning_job_id}/cancel")
def cancel_job(fine_tuning_job_id: str, session: SessionDep, org: OrgDep) -> JobObject:
    return JobObject.from_row(jobs.cancel_job(session, org, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/pause")
def pause_job(fine_tuning_job_id: str, session: SessionDep, org: OrgDep) -> JobObject:
    """A queued job pauses at once; a running one saves a checkpoint at the end of its
    current step and frees its GPU (status stays `running` until then)."""
    return JobObject.from_row(jobs.pause_job(session, org, fine_tuning_job_id))


@router.post("/{fine_tuning_job_id}/resume")
def resume_job(fine_tuning_job_id: str, org: OrgDep) -> JobObject:
    """Queue a paused job again; it continues from its newest checkpoint."""
    return JobObject.from_row(jobs.resume_job(org, fine_tuning_job_id))


@router.get("/{fine_tuning_job_id}/checkpoints")
def list_checkpoints(
    fine_tuning_job_id: str, session: SessionDep, org: OrgDep, after: str | None = None, limit: Limit = 10
) -> ListPage[CheckpointObject]:
    """The job's kept checkpoints, newest first (OpenAI's checkpoint objects)."""
    job = jobs.get_job(session, org, fine_tuning_job_id)
    rows, has_more = checkpoints.list_checkpoints(session, job.id, after, limit)
    return ListPage[CheckpointObject].of([CheckpointObject.from_row(job, c) for c in rows], has_more)


@router.get(
    "/{fine_tuning_job_id}/checkpoints/{checkpoint_id}/adapter",
    response_class=StreamingResponse,
    responses=streamed("application/gzip", "The checkpoint's adapter as one .tar.gz"),
)
def download_checkpoint_adapter(
    fine_tuning_job_id: str, checkpoint_id: str, session: SessionDep, org: OrgDep
) -> StreamingResponse:
    """The checkpoint's adapter as one .tar.gz, in the same layout as the final adapter."""
    checkpoint = checkpoints.get_checkpoint(session, org, fine_tuning_job_id, checkpoint_id)
    return StreamingResponse(
        get_storage().iter_chunks(checkpoint.adapter_key),
        media_type="application/gzip",
        headers=_checkpoint_headers(checkpoint),
    )


@router.delete("/{fine_tuning_job_id}/checkpoints/{checkpoint_id}")
def delete_checkpoint(fine_tuning_job_id: str, checkpoint_id: str, org: OrgDep) -> DeletedCheckpoint:
    """Delete a checkpoint (adapter and trainer state). `409` for the newest checkpoint
    of an active job (it resumes from it) and for one an active job starts from."""
    job_cleanup.delete_checkpoint(get_storage(), org, fine_tuning_job_id, checkpoint_id)
    return DeletedCheckpoint(id=checkpoint_id)


@router.get("/{fine_tuning_job_id}/events")
def list_events(
    fine_tuning_job_id: str, session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[JobEventObject]:
    """Newest first, as OpenAI pages them."""
    if after is not None:  # a cursor into an unknown job's log: the job's 404, not the cursor's
        jobs.get_job(session, org, fine_tuning_job_id)
    rows, has_more = events.list_events(session, org, fine_tuning_job_id, after, limit)
    if not rows:  # an empty page, or a job that is not the organization's
        jobs.get_job(session, org, fine_tuning_job_id)
    return ListPage[JobEventObject].of([JobEventObject.from_row(e) for e in rows], has_more)


@router.get(
    "/{fine_tuning_job_id}/events/stream",
    response_class=StreamingResponse,
    responses=streamed("text/event-stream", "The job's events as Server-Sent Events, ending with `event: end`"),
)
async def stream_events(
    fine_tuning_job_id: str, org: OrgDep, last_event_id: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    """Server-Sent Events, oldest first, ending when the job ends. Reconnect with
    `Last-Event-ID` to continue where a stream broke off."""
    position = await run_in_threadpool(streams.stream_start, org, fine_tuning_job_id, last_event_id)
    return StreamingResponse(
        streams.job_event_stream(fine_tuning_job_id, position),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/{fine_tuning_job_id}/metrics")
def list_metrics(
    fine_tuning_job_id: str, session: ReadSessionDep, org: OrgDep, split: Split | None = None
) -> ListPage[MetricPoint]:
    """The whole time series (step, loss, learning rate, grad norm, tokens/s), by split
    and step, or only that of `split`; one page (`has_more` false; points have no ids)."""
    points = events.org_job_metrics(session, org, fine_tuning_job_id, split)
    if not points:  # none yet, or a job that is not the organization's
        jobs.get_job(session, org, fine_tuning_job_id)
    return ListPage[MetricPoint].of([MetricPoint.from_row(m) for m in points], False)


@router.get(
    "/{fine_tuning_job_id}/metrics.png",
    response_class=Response,
    responses=streamed("image/png", "Training and validation loss by step, and the learning rate, as a PNG"),
)
def metrics_chart(fine_tuning_job_id: str, org: OrgDep) -> Response:
    """The curves of `/metrics` as a picture (900 × 550); a job without metrics yet gets
    empty axes that say so."""
    with read_scope() as session:
        job = jobs.get_job(session, org, fine_tuning_job_id)
        chart = MetricsChart.of(job, events.metrics_for(session, job.id))
    return Response(chart.png(), media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get(
    "/{fine_tuning_job_id}/artifacts/{kind}",
    response_class=StreamingResponse,
    responses=streamed("application/gzip", "The artifact as one .tar.gz; its sha256 in X-Artifact-SHA256"),
)
def download_artifact(fine_tuning_job_id: str, kind: str, session: SessionDep, org: OrgDep) -> StreamingResponse:
    """The adapter as one .tar.gz (PEFT format: adapter_config.json, adapter_model.safetensors)."""
    artifact = artifacts.get_artifact(session, org, fine_tuning_job_id, kind)
    return StreamingResponse(
        get_storage().iter_chunks(artifact.storage_key),
        media_type="application/gzip",
        headers=_artifact_headers(artifact),
    )
