"""Training data as `datasets.Dataset`s of token ids and loss masks, encoded by
core.tokenization (the same code the API previews with). Examples are read and encoded
one at a time and written to Arrow by `Dataset.from_generator`, so memory stays bounded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from core.datasets import DataFile, examples_of
from core.errors import ServiceError
from core.tokenization import PreparedTokenizer
from worker.training.failures import DataError
from worker.training.multitask import TASK_IDS


def _encoded(
    prepared: PreparedTokenizer,
    source: DataFile,
    max_length: int,
    train_on_inputs: bool,
    task_ids: dict[str, int] | None,
) -> Iterator[dict[str, Any]]:
    for example in examples_of(source):
        encoded = prepared.encode(example, max_length, train_on_inputs)
        if encoded.trained_tokens:  # nothing to learn from an example truncated to its prompt
            row: dict[str, Any] = {"input_ids": encoded.input_ids, "completion_mask": encoded.completion_mask}
            if task_ids is not None:
                row[TASK_IDS] = _task_id(task_ids, example.task, source)
            yield row


def _task_id(task_ids: dict[str, int], task: str | None, source: DataFile) -> int:
    if task not in task_ids:  # job creation refuses such data: a file changed under the job
        raise DataError(f"An example of {source.name} has task {task!r}, which has no prompt", param="task")
    return task_ids[task]


def from_generator(
    generator: Callable[..., Iterator[dict[str, Any]]], gen_kwargs: dict[str, Any], cache_dir: Path, empty: str
) -> Dataset:
    """A dataset written to Arrow from `generator`, row by row; what the generator raised
    for the data (a ServiceError, a DataError) surfaces as itself, and no row at all is a
    DataError saying `empty`."""
    try:
        dataset = Dataset.from_generator(generator, cache_dir=str(cache_dir), gen_kwargs=gen_kwargs)
    except Exception as exc:  # datasets wraps what the generator raised
        if isinstance(exc.__cause__, ServiceError | DataError):
            raise exc.__cause__ from exc
        raise
    if len(dataset) == 0:
        raise DataError(empty, param="qlora.training.max_seq_length")
    return dataset


def encoded_dataset(
    prepared: PreparedTokenizer,
    source: DataFile,
    max_length: int,
    train_on_inputs: bool,
    cache_dir: Path,
    task_ids: dict[str, int] | None = None,
) -> Dataset:
    """`task_ids`: a multitask adapter's id of each task; each row then carries its own."""
    return from_generator(
        _encoded,
        {
            "prepared": prepared,
            "source": source,
            "max_length": max_length,
            "train_on_inputs": train_on_inputs,
            "task_ids": task_ids,
        },
        cache_dir,
        f"no example of {source.name} has a trained token within max_seq_length={max_length}",
    )


def hold_out(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split off a validation fraction, chosen with the job's seed (at least one example)."""
    if len(dataset) < 2:
        raise DataError("validation_split needs at least two training examples", param="qlora.data.validation_split")
    size = max(1, round(len(dataset) * fraction))
    split = dataset.train_test_split(test_size=size, seed=seed)
    return split["train"], split["test"]
