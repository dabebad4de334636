"""What a model would learn from a file: examples rendered through the base model's
chat template, with the trained spans marked, exactly as training encodes them."""

from __future__ import annotations

from contextlib import closing
from itertools import islice
from typing import Any

from sqlalchemy.orm import Session

from core import files, registry
from core.datasets import examples_of
from core.tokenization import prepare_tokenizer

TRAINED_OPEN, TRAINED_CLOSE = "[[", "]]"


def preview_file(
    session: Session,
    org_id: str,
    file_id: str,
    model: str,
    n: int,
    max_seq_length: int,
    train_on_inputs: bool,
) -> dict[str, Any]:
    file = files.usable_for_training(session, org_id, file_id, "file_id")
    prepared = prepare_tokenizer(registry.resolve_model(model))
    shown = []
    examples = examples_of(files.data_file(file))
    with closing(examples):  # the file closes even though only the first n are read
        for example in islice(examples, n):
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
