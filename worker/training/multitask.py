"""Multitask prompt tuning in training: peft's model picks each example's prompt by its
task id, which its forward takes as `task_ids`. The examples carry their task's id
(worker.training.data), each batch passes them on, and every save of the adapter
(checkpoints too) writes the task names beside it, so a user calls the model with the
right id."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TASK_IDS = "task_ids"  # the dataset column and the model's keyword argument
TASKS_FILE = "tasks.json"


def task_ids(tasks: list[str]) -> dict[str, int]:
    """Each task's id: its place in the job's task list."""
    return {name: i for i, name in enumerate(tasks)}


def write_tasks(adapter_dir: Path, tasks: list[str]) -> None:
    """The task names and their ids beside an adapter ({"name": id, ...})."""
    (adapter_dir / TASKS_FILE).write_text(json.dumps(task_ids(tasks), indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class TaskIdsCollator:
    """A collator's batch with the examples' task ids added (TRL's collators keep only
    the token columns)."""

    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.collate(examples) | {TASK_IDS: torch.tensor([example[TASK_IDS] for example in examples])}
