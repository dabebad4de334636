"""What a model would learn from a file: examples rendered through the base model's
chat template, with the trained spans marked, exactly as training encodes them."""

from __future__ import annotations

from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from core import files, registry
from core.datasets import iter_examples
from core.errors import InvalidRequest
from core.storage import LocalStorage
from core.tokenization import prepare_tokenizer

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"


def preview_file(
    session: Session,
    storage: LocalStorage,
    org_id: str,
    file_id: str,
    model: str,
    n: int,
    max_seq_length: int,
    train_on_inputs: bool,
) -> dict[str, Any]:
    file = files.get_file(session, org_id, file_id)
    if file.purpose not in files.PURPOSES:  # a job's results file holds metrics, not examples
        raise InvalidRequest(
            f"File {file_id} has purpose {file.purpose!r}; only training data can be previewed",
            param="file_id",
            code="invalid_file",
        )
    if file.status != files.PROCESSED:
        raise InvalidRequest(
            f"File {file_id} failed validation: {file.status_details}", param="file_id", code="invalid_file"
        )
    prepared = prepare_tokenizer(registry.resolve_model(model))
    shown = []
    with storage.open(file.storage_key) as stream:
        for example in islice(iter_examples(stream, file.file_type, file.format), n):  # type: ignore[arg-type]
            encoded = prepared.encode(example, max_seq_length, train_on_inputs)
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
        "model": model,
        "format": file.format,
        "chat_template": prepared.template_source,
        "eos_appended": prepared.append_eos,
        "notes": prepared.notes(),
        "marker": [TRAINED_OPEN, TRAINED_CLOSE],
        "data": shown,
    }
