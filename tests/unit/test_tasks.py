"""Example tasks (multitask prompt tuning): every format in every file type carries an
optional `task`; a file gives every example a task or none, and each problem names its
line (or row); a job's tasks come from its training file."""

import io
import json

import pytest

from core.datasets import iter_examples, validate
from core.errors import InvalidRequest
from core.tasks import MAX_TASK_CHARS, MAX_TASKS, FileTasks, job_tasks
from tests.helpers import EXAMPLES
from tests.unit.test_datasets import EXAMPLES as ROWS
from tests.unit.test_datasets import WRITERS, as_csv, as_jsonl, as_parquet


def first_line(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text().splitlines()[0])


# Every format, and the shapes with tool calls and both preference shapes.
TASKED = ROWS | {
    "chat_tools": first_line("chat_tools.jsonl"),
    "sharegpt_function_call": json.loads((EXAMPLES / "sharegpt.jsonl").read_text().splitlines()[2]),
    "preference": first_line("preference.jsonl"),
    "preference_trl": {"prompt": "2+2=", "chosen": "4", "rejected": "5"},
}
FORMAT_OF = {"chat_tools": "chat", "sharegpt_function_call": "sharegpt", "preference_trl": "preference"}


def check(content: bytes, file_type: str = "jsonl"):  # type: ignore[no-untyped-def]
    return validate(io.BytesIO(content), file_type)  # type: ignore[arg-type]


@pytest.mark.parametrize("file_type", list(WRITERS))
@pytest.mark.parametrize("shape", list(TASKED))
def test_every_format_in_every_file_type_carries_a_task(shape: str, file_type: str) -> None:
    rows = [TASKED[shape] | {"task": task} for task in ("summarize", "translate", "summarize")]
    content = WRITERS[file_type](rows)
    report = check(content, file_type)
    assert report.ok, report.problems
    assert report.format == FORMAT_OF.get(shape, shape)
    assert report.tasks.as_dict() == {"summarize": 2, "translate": 1}
    examples = iter_examples(io.BytesIO(content), file_type, report.format)  # type: ignore[arg-type]
    assert [e.task for e in examples] == ["summarize", "translate", "summarize"]


def test_examples_without_tasks_have_none() -> None:
    report = check(as_jsonl([ROWS["chat"]] * 2))
    assert report.ok and report.tasks.as_dict() is None
    assert [e.task for e in iter_examples(io.BytesIO(as_jsonl([ROWS["chat"]])), "jsonl", "chat")] == [None]


@pytest.mark.parametrize(
    ("file_type", "rows", "where", "words"),
    [
        ("jsonl", [{"task": "a"}, {}, {"task": "b"}], (2, 2), "this example has no task, but line 1 has task 'a'"),
        ("jsonl", [{}, {}, {"task": "a"}], (3, 3), "this example has a task, but line 1 has no task"),
        ("jsonl", [{"task": "a"}, {"task": None}], (2, 2), "has no task, but line 1"),
        # A CSV record's line; an empty cell is no task.
        ("csv", [{"task": "a"}, {"task": ""}], (3, 2), "has no task, but line 2 has task 'a'"),
        # Parquet gives every row every column: a null is no task. Rows have no line.
        ("parquet", [{"task": "a"}, {"task": None}], (None, 2), "has no task, but row 1 has task 'a'"),
        ("json", [{}, {"task": "a"}], (None, 2), "has a task, but row 1 has no task"),
    ],
)
def test_a_task_on_some_examples_but_not_others_names_the_line(
    file_type: str, rows: list[dict], where: tuple, words: str
) -> None:
    report = check(WRITERS[file_type]([ROWS["prompt_completion"] | row for row in rows]), file_type)
    [problem] = report.problems
    assert (problem.line, problem.row, problem.field) == (*where, "task")
    assert words in problem.message and "give every example a task, or none" in problem.message


@pytest.mark.parametrize(
    ("task", "words"),
    [
        (5, "must be a string, not int"),
        (["a"], "must be a string, not list"),
        ("", "must not be empty"),
        ("  ", "must not be empty"),
        ("t" * (MAX_TASK_CHARS + 1), f"at most {MAX_TASK_CHARS} characters"),
        ("a\x00b", "control characters"),
        ("two\nlines", "control characters"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_a_task_that_is_not_a_name_is_a_problem_of_its_line(task: object, words: str) -> None:
    rows = [ROWS["text"] | {"task": "fine"}, ROWS["text"] | {"task": task}]
    [problem] = check(b"".join(json.dumps(row).encode() + b"\n" for row in rows)).problems
    assert (problem.line, problem.field) == (2, "task") and words in problem.message


def test_a_problem_elsewhere_in_a_row_does_not_hide_its_task_problem() -> None:
    rows = [{"prompt": "p", "completion": "", "task": 3}]
    assert [(p.field, p.line) for p in check(as_jsonl(rows)).problems] == [("task", 1), ("completion", 1)]


def test_tasks_are_bounded_per_file() -> None:
    rows = [ROWS["text"] | {"task": f"task-{i}"} for i in range(MAX_TASKS + 2)]
    problems = check(as_csv(rows), "csv").problems
    assert [(p.line, p.field) for p in problems] == [(MAX_TASKS + 2, "task"), (MAX_TASKS + 3, "task")]
    assert f"at most {MAX_TASKS}" in problems[0].message
    # A task seen before is no new task.
    again = [ROWS["text"] | {"task": f"task-{i % MAX_TASKS}"} for i in range(2 * MAX_TASKS)]
    assert check(as_parquet(again), "parquet").ok


def test_only_valid_examples_are_counted() -> None:
    rows = [ROWS["prompt_completion"] | {"task": "a"}, {"prompt": "p", "completion": "", "task": "b"}]
    assert check(as_jsonl(rows)).tasks.as_dict() == {"a": 1}


# -- a job's tasks ------------------------------------------------------------------------
TRAINING = FileTasks("training_file", "file-t", {"translate": 3, "summarize": 2}.keys())


def test_a_multitask_job_takes_its_training_files_tasks_sorted_as_ids() -> None:
    assert job_tasks("multitask_prompt_tuning", TRAINING, None, None) == ["summarize", "translate"]
    validation = FileTasks("validation_file", "file-v", ["translate"])
    assert job_tasks("multitask_prompt_tuning", TRAINING, validation, None) == ["summarize", "translate"]
    # Continuing a multitask checkpoint: its tasks and ids, which the data's may be a part of.
    assert job_tasks("multitask_prompt_tuning", TRAINING, None, ["x", "summarize", "translate"]) == [
        "x",
        "summarize",
        "translate",
    ]


def test_other_adapters_ignore_tasks() -> None:
    assert job_tasks("lora", TRAINING, None, None) is None
    assert job_tasks("prompt_tuning", FileTasks("training_file", "file-t", None), None, None) is None


@pytest.mark.parametrize(
    ("training", "validation", "trained", "param", "code", "words"),
    [
        (
            FileTasks("training_file", "file-t", None),
            None,
            None,
            "training_file",
            "missing_tasks",
            "the examples of training_file file-t have no `task` field",
        ),
        (
            TRAINING,
            FileTasks("validation_file", "file-v", None),
            None,
            "validation_file",
            "missing_tasks",
            "validation_file file-v have no `task` field",
        ),
        (
            TRAINING,
            FileTasks("validation_file", "file-v", ["summarize", "classify"]),
            None,
            "validation_file",
            "unknown_task",
            "validation_file file-v has task 'classify', which the multitask_prompt_tuning adapter has no prompt "
            "for; its tasks (from training_file file-t) are 'summarize', 'translate'",
        ),
        (
            TRAINING,
            None,
            ["summarize"],
            "training_file",
            "unknown_task",
            "training_file file-t has task 'translate', which the multitask_prompt_tuning adapter has no prompt "
            "for; its tasks (from the checkpoint it continues) are 'summarize'",
        ),
    ],
)
def test_a_multitask_job_refuses_data_without_its_tasks(  # type: ignore[no-untyped-def]
    training, validation, trained, param: str, code: str, words: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        job_tasks("multitask_prompt_tuning", training, validation, trained)
    assert (refused.value.param, refused.value.code) == (param, code)
    assert words in refused.value.message
