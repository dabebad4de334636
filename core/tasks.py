"""Example tasks, what multitask prompt tuning trains on: any example of any format may
name its task in a `task` field (a short string). A file gives every example a task or
none, so no example silently trains without one; a job with a multitask adapter needs
them, and every other adapter ignores them.

A job's tasks are its training file's task names, sorted (or, continuing a multitask
checkpoint, that checkpoint's); a task's id, which the model takes as `task_ids`, is
its place in that list."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from core.errors import InvalidRequest
from core.json_values import Problems, shown, text_problem

TASK_KEY = "task"
MAX_TASK_CHARS = 64
# One soft prompt per task is trained; a file with far more tasks holds ids, not tasks.
MAX_TASKS = 100
MULTITASK = "multitask_prompt_tuning"


def task_problem(value: Any) -> str | None:
    """Why `value` cannot name a task (None: absent, which is not a problem here)."""
    if value is None:
        return None
    if (problem := text_problem(value)) is not None:
        return problem
    if not value.strip():
        return "must not be empty"
    if len(value) > MAX_TASK_CHARS:
        return f"must be at most {MAX_TASK_CHARS} characters (got {len(value)})"
    if any(unicodedata.category(char) == "Cc" for char in value):
        return "must not contain control characters (NUL, tabs, newlines, ...): it is a name"
    return None


@dataclass
class TaskTally:
    """The tasks of a file's examples as validation reads them, in order: whether the
    first example had one (every other must agree), and the examples per task."""

    counts: Counter[str] = field(default_factory=Counter)
    _first: tuple[str, str | None] | None = None  # where the first example is, and its task
    _names: set[str] = field(default_factory=set)

    def check(self, task: Any, where: str) -> Problems:
        """The problems of one example's task that need the examples before it."""
        if self._first is None:
            self._first = (where, task)
        first_where, first_task = self._first
        if (task is None) != (first_task is None):
            had = f"has task {shown(first_task)}" if first_task is not None else "has no task"
            this = "has no task" if task is None else "has a task"
            yield TASK_KEY, f"this example {this}, but {first_where} {had}: give every example a task, or none"
        elif isinstance(task, str) and task_problem(task) is None and task not in self._names:
            if len(self._names) >= MAX_TASKS:
                yield TASK_KEY, f"{shown(task)} would be task {MAX_TASKS + 1}; a file may have at most {MAX_TASKS}"
            else:
                self._names.add(task)

    def count(self, task: str | None) -> None:
        if task is not None:
            self.counts[task] += 1

    def as_dict(self) -> dict[str, int] | None:
        """Examples per task, by name; None when the examples have no task."""
        return dict(sorted(self.counts.items())) if self.counts else None


@dataclass(frozen=True)
class FileTasks:
    """The task names of one of a job's data files, and how the job names the file."""

    param: str  # training_file, validation_file
    file_id: str
    names: Collection[str] | None  # None: its examples have no task


def job_tasks(
    adapter_type: str, training: FileTasks, validation: FileTasks | None, trained: list[str] | None
) -> list[str] | None:
    """The task names of a job, in task-id order: None unless its adapter is multitask
    (other adapters ignore tasks). `trained`: the tasks of the multitask checkpoint it
    continues, whose prompts it keeps training. Refuses data without tasks and a task
    the adapter has no prompt for, naming the file."""
    if adapter_type != MULTITASK:
        return None
    tasks = trained or sorted(_names_of(training))
    source = "from the checkpoint it continues" if trained else f"from training_file {training.file_id}"
    for data in (training, validation) if validation else (training,):
        unknown = sorted(set(_names_of(data)) - set(tasks))
        if unknown:
            raise InvalidRequest(
                f"{data.param} {data.file_id} has task {unknown[0]!r}, which the {MULTITASK} adapter has no prompt "
                f"for; its tasks ({source}) are {', '.join(map(repr, tasks))}",
                param=data.param,
                code="unknown_task",
            )
    return tasks


def _names_of(data: FileTasks) -> Collection[str]:
    if data.names is None:
        raise InvalidRequest(
            f"qlora.adapter.type {MULTITASK} trains one prompt per task, but the examples of {data.param} "
            f"{data.file_id} have no `{TASK_KEY}` field: give every example its task's name in `{TASK_KEY}`",
            param=data.param,
            code="missing_tasks",
        )
    return data.names
