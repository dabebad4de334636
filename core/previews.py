"""What a model would learn from a file: examples rendered through the base model's
chat template, with the trained spans marked, exactly as training encodes them.

The API asks (`ask`: cheap checks, a pending row, a message to the pre-flight queue once
committed) and waits for the answer (`answer`); a pre-flight worker renders it
(`compute`), since that needs the model's tokenizer, which the API process never loads.
A finished preview answers the same question again (same file content, model version
and options) without new work."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import files, registered_models, registry
from core.datasets import examples_of
from core.db import session_scope
from core.errors import ServiceError
from core.ids import new_id, now
from core.models import Preview
from core.queue import PREVIEW_FILE_TASK, send
from core.settings import get_settings
from core.tokenization import prepare_tokenizer

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"
PENDING, DONE, FAILED = "pending", "done", "failed"


@dataclass(frozen=True)
class PreviewRequest:
    model: str
    n: int
    max_seq_length: int
    train_on_inputs: bool


def _key(sha256: str, model_version: float, request: PreviewRequest) -> str:
    asked = [sha256, model_version, request.model, request.n, request.max_seq_length, request.train_on_inputs]
    return hashlib.sha256(json.dumps(asked).encode()).hexdigest()


def _reusable(session: Session, org_id: str, key: str) -> Preview | None:
    """A finished preview of the same question, or one still pending that a worker may
    yet answer (younger than the wait for it)."""
    pending_since = now() - get_settings().preview_timeout_seconds
    stmt = (
        select(Preview)
        .where(Preview.organization_id == org_id, Preview.key == key, Preview.status != FAILED)
        .order_by(Preview.pk.desc())
        .limit(1)
    )
    row = session.scalar(stmt)
    if row is None or (row.status == PENDING and row.created_at < pending_since):
        return None
    return row


def ask(org_id: str, file_id: str, request: PreviewRequest) -> str:
    """The id of the preview that answers this request: a reusable one, or a new pending
    one sent to the pre-flight queue once committed (this function commits). A file that
    cannot train or an unknown model is refused here, at once."""
    with session_scope() as session:
        file = files.usable_for_training(session, org_id, file_id, "file_id")
        model_ref = registered_models.resolve_for(session, org_id, request.model)
        key = _key(file.sha256, registry.modified_at(model_ref), request)
        reused = _reusable(session, org_id, key)
        if reused is not None:
            return reused.id
        row = Preview(
            id=new_id("preview"),
            organization_id=org_id,
            file_id=file_id,
            key=key,
            request=request.__dict__,
            status=PENDING,
        )
        session.add(row)
    send(PREVIEW_FILE_TASK, row.id)  # unsent (broker down): the wait for it times out
    return row.id


def answer(preview_id: str) -> dict[str, Any] | None:
    """The finished preview, None while pending; a refusal raises it as it was raised
    in the worker (its status, code, message and param)."""
    with session_scope() as session:
        row = session.scalar(select(Preview).where(Preview.id == preview_id))
    if row is None or row.status == PENDING:
        return None
    if row.status == FAILED and row.error is not None:
        refusal = ServiceError(row.error["message"], param=row.error["param"], code=row.error["code"])
        refusal.status_code = row.error["status"]
        raise refusal
    return row.result


def render(org_id: str, file_id: str, request: PreviewRequest) -> dict[str, Any]:
    """The first `n` examples of the file under the model's tokenizer."""
    with session_scope() as session:
        file = files.usable_for_training(session, org_id, file_id, "file_id")
        model_ref = registered_models.resolve_for(session, org_id, request.model)
    prepared = prepare_tokenizer(model_ref)
    shown = []
    examples = examples_of(files.data_file(file))
    with closing(examples):  # the file closes even though only the first n are read
        for example in islice(examples, request.n):
            encoded = prepared.encode(example, request.max_seq_length, request.train_on_inputs)
            segments = prepared.segments(encoded)
            shown.append(
                {
                    "tokens": len(encoded.input_ids),
                    "trained_tokens": encoded.trained_tokens,
                    "truncated": encoded.truncated,
                    "marked": "".join(
                        f"{TRAINED_OPEN}{s['text']}{TRAINED_CLOSE}" if s["trained"] else s["text"] for s in segments
                    ),
                    "segments": segments,
                }
            )
    return {
        "object": "file.preview",
        "file_id": file_id,
        "model": request.model,
        "format": file.format,
        "chat_template": prepared.template_source,
        "eos_appended": prepared.append_eos,
        "notes": prepared.notes(),
        "marker": [TRAINED_OPEN, TRAINED_CLOSE],
        "data": shown,
    }


def compute(preview_id: str) -> None:
    """A pre-flight worker's part: render a pending preview and store the result, or the
    refusal (a template that cannot render an example, say) for the API to answer with.
    Any other failure is stored as `preview_failed` (500) and raised for the log."""
    with session_scope() as session:
        row = session.scalar(select(Preview).where(Preview.id == preview_id, Preview.status == PENDING))
        if row is None:  # answered already (a duplicate message)
            return
        org_id, file_id, request = row.organization_id, row.file_id, PreviewRequest(**row.request)
    try:
        result, error = render(org_id, file_id, request), None
    except ServiceError as refusal:
        result, error = None, _as_error(refusal.status_code, refusal.code, refusal.message, refusal.param)
    except Exception as exc:
        message = f"The preview failed in the pre-flight worker ({type(exc).__name__}: {exc})"
        _store(preview_id, None, _as_error(500, "preview_failed", message, None))
        raise
    _store(preview_id, result, error)


def _as_error(status: int, code: str, message: str, param: str | None) -> dict[str, Any]:
    return {"status": status, "code": code, "message": message, "param": param}


def _store(preview_id: str, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
    with session_scope() as session:
        row = session.scalar(select(Preview).where(Preview.id == preview_id))
        if row is not None:
            row.status, row.result, row.error = (FAILED, None, error) if error else (DONE, result, None)


def forget_old(session: Session, max_age_seconds: float) -> None:
    """Previews are answers to questions asked moments ago: old ones go (the maintenance loop)."""
    session.execute(delete(Preview).where(Preview.created_at < time.time() - max_age_seconds))
