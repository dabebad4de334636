from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import idempotent_requests
from api.deps import Limit, OrgDep, SessionDep
from api.openapi import ModelRoute, streamed
from api.previews import wait_for_preview
from api.schemas import DeletedFile, FileObject, FilePreview, ListPage
from api.upload import receive_upload
from core import files, previews, usage
from core.db import session_scope
from core.errors import InvalidRequest
from core.formats import FORMATS
from core.idempotency import fingerprint
from core.ids import new_id
from core.storage import StoredObject, get_storage

router = APIRouter(prefix="/v1/files", tags=["files"], route_class=ModelRoute)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(files.PURPOSES)},
                        "format": {"type": "string", "enum": ["auto", *FORMATS], "default": "auto"},
                    },
                }
            }
        },
    }
}


def _ingest(org: str, file_id: str, filename: str, fields: dict[str, str], stored: StoredObject) -> FileObject:
    file = files.ingest_upload(
        get_storage(), org, file_id, filename, fields.get("purpose"), stored, fields.get("format")
    )
    body = FileObject.from_row(file)
    if file.status == files.ERROR:
        raise InvalidRequest(
            f"{filename} is not a valid training file: {file.status_details}. The file is kept as {file_id} "
            "with status 'error' so its problems can be read; it cannot be used for training.",
            param="file",
            code="invalid_file",
            details=file.problems,
            extra={"file": body.model_dump(mode="json")},
        )
    return body


UPLOADS = "POST /v1/files"


@router.post("", openapi_extra=UPLOAD_BODY)
async def upload_file(
    request: Request, org: OrgDep, idempotency_key: idempotent_requests.IdempotencyKeyHeader = None
) -> FileObject | Response:
    """Upload a dataset (multipart: `file`, `purpose=fine-tune`, optional `format`):
    JSONL, JSON array, CSV or Parquet in any of the formats the README lists."""
    file_id = new_id("file")
    storage = get_storage()

    async def receive(replaying: bool) -> tuple[str, FileObject | None]:
        with session_scope() as session:
            max_bytes, too_large = usage.upload_allowance(session, org)
        upload = await receive_upload(request, storage, f"files/{file_id}", max_bytes, too_large)
        # What the upload asks for; the multipart boundary differs between retries.
        asked = fingerprint([upload.filename, upload.fields, upload.stored.sha256, upload.stored.bytes])
        if replaying:  # a retry: the first upload's file stands, this one's bytes go
            await run_in_threadpool(storage.delete, upload.stored.key)  # on S3, a request
            return asked, None
        return asked, await run_in_threadpool(_ingest, org, file_id, upload.filename, upload.fields, upload.stored)

    return await idempotent_requests.run_once(org, UPLOADS, idempotency_key, FileObject, receive)


# Uploads, and the result files of succeeded jobs (their `result_files`).
ListedPurpose = Literal["fine-tune", "fine-tune-results"]


@router.get("")
def list_files(
    session: SessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20, purpose: ListedPurpose | None = None
) -> ListPage[FileObject]:
    """The organization's files, newest first; only those of `purpose`, when given."""
    rows, has_more = files.list_files(session, org, after, limit, purpose)
    return ListPage[FileObject].of([FileObject.from_row(f) for f in rows], has_more)


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, org: OrgDep) -> FileObject:
    return FileObject.from_row(files.get_file(session, org, file_id))


def _attachment(filename: str) -> str:
    """Content-Disposition of a download. Header values are latin-1 and a quote would end
    the quoted name, so any other name goes percent-encoded as UTF-8 (RFC 6266 filename*)."""
    encoded = quote(filename, safe="")
    return f'attachment; filename="{filename}"' if encoded == filename else f"attachment; filename*=UTF-8''{encoded}"


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses=streamed("application/octet-stream", "The file's bytes, as uploaded"),
)
def get_file_content(file_id: str, session: SessionDep, org: OrgDep) -> StreamingResponse:
    file = files.get_file(session, org, file_id)
    return StreamingResponse(
        get_storage().iter_chunks(file.storage_key),
        media_type="application/octet-stream",
        headers={"Content-Length": str(file.bytes), "Content-Disposition": _attachment(file.filename)},
    )


@router.get("/{file_id}/preview")
async def preview_file(
    file_id: str,
    org: OrgDep,
    model: Annotated[str, Query(min_length=1)],
    n: Annotated[int, Query(ge=1, le=50)] = 5,
    max_seq_length: Annotated[int, Query(ge=16, le=131072)] = 2048,
    train_on_inputs: bool = False,
) -> FilePreview:
    """The first `n` examples rendered through `model`'s chat template; the tokens the
    loss is computed on are wrapped in [[ ]] (and flagged in `segments`). A pre-flight
    worker renders it; the request waits for it without holding a thread, and answers
    503 (`preflight_unavailable`) if none answers within the preview timeout."""
    request = previews.PreviewRequest(model, n, max_seq_length, train_on_inputs)
    preview_id = await run_in_threadpool(previews.ask, org, file_id, request)
    return FilePreview.model_validate(await wait_for_preview(preview_id))


@router.delete("/{file_id}")
def delete_file(file_id: str, org: OrgDep) -> DeletedFile:
    files.delete_file(get_storage(), org, file_id)
    return DeletedFile(id=file_id)
