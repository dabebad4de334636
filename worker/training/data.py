"""Training data as a `datasets.Dataset` of chat conversations. Lines are read one at a
time and written to Arrow by `Dataset.from_generator`, so memory stays bounded; only
role and content are kept, so extra keys with varying types cannot break the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from worker.failures import DataError


def _conversations(path: str) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                example = json.loads(raw)
                messages = [{"role": m["role"], "content": m["content"]} for m in example["messages"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"line {line_no}: cannot read the conversation ({exc})", param="training_file") from exc
            yield {"messages": messages}


def load_chat_dataset(path: Path, cache_dir: Path) -> Dataset:
    try:
        dataset = Dataset.from_generator(_conversations, gen_kwargs={"path": str(path)}, cache_dir=str(cache_dir))
    except Exception as exc:  # datasets wraps what the generator raised
        cause = exc if isinstance(exc, DataError) else exc.__cause__
        if isinstance(cause, DataError):
            raise cause from exc
        raise
    if len(dataset) == 0:
        raise DataError("the file contains no conversations", param="training_file")
    return dataset
