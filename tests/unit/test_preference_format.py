"""The preference format (DPO): both shapes in every file type, and each problem named by
line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.datasets import DataFile
from core.preference_format import PreferencePair
from core.preferences import pairs_of
from tests.helpers import jsonl
from tests.unit.test_datasets import WRITERS, as_jsonl, check

OPENAI = {
    "input": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]},
    "preferred_output": [{"role": "assistant", "content": "4"}],
    "non_preferred_output": [{"role": "assistant", "content": "5, I think"}],
}
TRL_TEXT = {"prompt": "2+2?", "chosen": "4", "rejected": "5, I think"}
TRL_MESSAGES = {
    "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5, I think"}],
}
PAIR = PreferencePair(
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    [{"role": "assistant", "content": "4"}],
    [{"role": "assistant", "content": "5, I think"}],
)
SHAPES = {"openai": OPENAI, "trl_text": TRL_TEXT, "trl_messages": TRL_MESSAGES}


@pytest.mark.parametrize("file_type", list(WRITERS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_shape_in_each_file_type_is_detected_and_read_as_pairs(shape: str, file_type: str, tmp_path: Path) -> None:
    if shape == "trl_messages" and file_type == "csv":
        pytest.skip("in CSV, prompt, chosen and rejected are text")
    content = WRITERS[file_type]([SHAPES[shape]] * 3)
    report = check(content, file_type)
    assert report.ok, report.problems
    assert (report.n_examples, report.format) == (3, "preference")
    path = tmp_path / "pairs"
    path.write_bytes(content)
    pairs = list(pairs_of(DataFile.local(path, file_type, "preference")))  # type: ignore[arg-type]
    expected = PAIR if shape != "trl_text" else PreferencePair(PAIR.prompt[1:], PAIR.chosen, PAIR.rejected)
    assert pairs == [expected] * 3


def test_both_shapes_mix_in_one_file_and_tools_are_kept(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    with_tools = dict(OPENAI, input=dict(OPENAI["input"], tools=tools))
    content = as_jsonl([with_tools, TRL_MESSAGES])
    assert check(content, "jsonl").ok
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    first, second = pairs_of(DataFile.local(path, "jsonl", "preference"))
    assert first.tools == tools and second.tools is None


def test_a_named_preference_format_is_enforced() -> None:
    report = check(as_jsonl([{"prompt": "p", "completion": "c"}]), "jsonl", "preference")
    found = {(p.field, p.message) for p in report.problems}
    assert ("completion", "unknown field; expected prompt, chosen, rejected, tools") in found
    assert ("chosen", "missing") in found


def test_csv_with_openai_columns_holds_json() -> None:
    assert check(WRITERS["csv"]([OPENAI]), "csv").ok
    named = check(b"prompt,chosen\np,c\n", "csv", "preference")
    assert "format preference needs" in named.problems[0].message


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        (dict(OPENAI, input=[]), "input", "must be an object"),
        (dict(OPENAI, input={"messages": []}), "input.messages", "non-empty"),
        (
            dict(OPENAI, input={"messages": [{"role": "robot", "content": "x"}]}),
            "input.messages[0].role",
            "unknown role",
        ),
        (dict(OPENAI, input={"messages": [{"role": "user", "content": 5}]}), "input.messages[0].content", "string"),
        (
            dict(OPENAI, input={"messages": [{"role": "user", "content": "x", "weight": 1}]}),
            "input.messages[0].weight",
            "unknown field",
        ),
        (
            dict(OPENAI, input={"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
            "input.messages",
            "must not end with an assistant message",
        ),
        (dict(OPENAI, input=dict(OPENAI["input"], tools="add")), "input.tools", "list of tool objects"),
        (dict(OPENAI, input=dict(OPENAI["input"], functions=[])), "input.functions", "unknown field"),
        (dict(OPENAI, preferred_output="4"), "preferred_output", "list of assistant messages"),
        (dict(OPENAI, preferred_output=[{"role": "user", "content": "4"}]), "preferred_output[0].role", "assistant"),
        (
            dict(OPENAI, non_preferred_output=[{"role": "assistant", "content": " "}]),
            "non_preferred_output[0].content",
            "must not be empty",
        ),
        (dict(OPENAI, non_preferred_output=OPENAI["preferred_output"]), "preferred_output", "is the same as"),
        (dict(OPENAI, weight=1), "weight", "unknown field"),
        (dict(TRL_TEXT, chosen=""), "chosen", "must not be empty"),
        (dict(TRL_TEXT, rejected=5), "rejected", "must be a string or a list of assistant messages, not int"),
        (dict(TRL_TEXT, prompt="\ud800"), "prompt", "lone surrogate"),
        (dict(TRL_TEXT, prompt=None), "prompt", "missing"),
        (dict(TRL_MESSAGES, rejected=[{"role": "assistant"}]), "rejected[0].content", "string"),
        (dict(TRL_TEXT, rejected="4"), "chosen", "is the same as"),
    ],
)
def test_each_problem_names_line_and_field(row: dict, field: str, words: str) -> None:
    report = check(jsonl(OPENAI, row), "jsonl", "preference")  # ASCII JSON: a lone surrogate as its escape
    assert not report.ok
    problem = report.problems[0]
    assert (problem.line, problem.row, problem.field) == (2, 2, field), report.problems
    assert words in problem.message


def test_detection_does_not_take_prompt_completion_for_preference() -> None:
    report = check(as_jsonl([{"prompt": "p", "completion": "c"}]), "jsonl")
    assert report.format == "prompt_completion"


def test_an_unknown_key_is_named_as_text_any_database_stores() -> None:
    row = dict(TRL_TEXT) | {"te\x00xt": 1, "\ud800" + "k" * 200: 2}
    fields = [p.field for p in check(jsonl(row), "jsonl", "preference").problems]
    assert fields[0] == "te\\x00xt" and fields[1].startswith("\\ud800kkk") and len(fields[1]) == 100
