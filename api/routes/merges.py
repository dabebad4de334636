"""Merges: `POST /v1/models/{model}/merge` starts one (the model: a fine-tuned model or
a checkpoint name, which holds colons and, for a hub base model, a slash: the path
parameter takes the rest of the path before `/merge`); `/v1/merges` reads them, their
logs, and downloads a merged model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import idempotent_requests
from api.deps import Limit, OrgDep, ReadSessionDep, SessionDep
from api.openapi import ModelRoute, streamed
from api.routes.jobs import download_headers
from api.schemas import DeletedMerge, ListPage, MergeEventObject, MergeObject
from core import merges
from core.idempotency import fingerprint
from core.merges import MergeRequest
from core.storage import get_storage

router = APIRouter(tags=["merges"], route_class=ModelRoute)

MERGES = "POST /v1/models/{model}/merge"


def _submit(org: str, model: str, request: MergeRequest) -> MergeObject:
    return MergeObject.from_row(merges.submit_merge(org, model, request))


@router.post("/v1/models/{model:path}/merge")
async def create_merge(
    model: str,
    org: OrgDep,
    request: Annotated[MergeRequest | None, Body()] = None,
    idempotency_key: idempotent_requests.IdempotencyKeyHeader = None,
) -> MergeObject | Response:
    """Merge a fine-tuned model (`ft:...`) or a checkpoint (`ft:...:ckpt-step-N`, or its
    `ftckpt-...` id) into its full-precision base model. A training worker runs it; the
    merge answers at once, `queued`. The body is optional."""
    asked = request or MergeRequest()
    wanted = fingerprint({"model": model, **asked.model_dump(mode="json")})

    async def submit(replaying: bool) -> tuple[str, MergeObject | None]:
        return wanted, None if replaying else await run_in_threadpool(_submit, org, model, asked)

    return await idempotent_requests.run_once(org, MERGES, idempotency_key, MergeObject, submit)


@router.get("/v1/merges")
def list_merges(
    session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[MergeObject]:
    """The organization's merges, newest first."""
    rows, has_more = merges.list_merges(session, org, after, limit)
    return ListPage[MergeObject].of([MergeObject.from_row(m) for m in rows], has_more)


@router.get("/v1/merges/{merge_id}")
def get_merge(merge_id: str, session: ReadSessionDep, org: OrgDep) -> MergeObject:
    return MergeObject.from_row(merges.get_merge(session, org, merge_id))


@router.delete("/v1/merges/{merge_id}")
def delete_merge(merge_id: str, org: OrgDep) -> DeletedMerge:
    """A finished merge, its log and its merged model (bytes included); a registered
    model is then no longer a base model of the organization. `409` while it is queued
    or running, or while a job trains on (or a merge merges onto) its registered model."""
    merges.delete_merge(get_storage(), org, merge_id)
    return DeletedMerge(id=merge_id)


@router.post("/v1/merges/{merge_id}/cancel")
def cancel_merge(merge_id: str, session: SessionDep, org: OrgDep) -> MergeObject:
    """A queued or running merge stops; a running one's result is discarded."""
    return MergeObject.from_row(merges.cancel_merge(session, org, merge_id))


@router.get("/v1/merges/{merge_id}/events")
def list_merge_events(
    merge_id: str, session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[MergeEventObject]:
    """The merge's log, newest first."""
    if after is not None:  # a cursor into an unknown merge's log: the merge's 404, not the cursor's
        merges.get_merge(session, org, merge_id)
    rows, has_more = merges.list_events(session, org, merge_id, after, limit)
    return ListPage[MergeEventObject].of([MergeEventObject.from_row(e) for e in rows], has_more)


@router.get(
    "/v1/merges/{merge_id}/content",
    response_class=StreamingResponse,
    responses=streamed(
        "application/x-tar", "The merged model as one .tar of one folder; its sha256 in X-Artifact-SHA256"
    ),
)
def download_merged_model(merge_id: str, session: SessionDep, org: OrgDep) -> StreamingResponse:
    """The merged model as one .tar that extracts into one folder: sharded safetensors,
    config.json, generation_config.json, the tokenizer and its chat template, README.md.
    `409` until the merge succeeded."""
    filename, stored = merges.merged_archive(session, org, merge_id)
    return StreamingResponse(
        get_storage().iter_chunks(stored.key),
        media_type="application/x-tar",
        headers=download_headers(filename, stored.bytes, stored.sha256),
    )
