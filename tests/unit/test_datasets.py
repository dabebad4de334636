import io
import json

import pytest

from core.datasets import MAX_PROBLEMS, validate_chat_jsonl


def report(text: str | bytes):  # type: ignore[no-untyped-def]
    return validate_chat_jsonl(io.BytesIO(text.encode() if isinstance(text, str) else text))


GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def test_valid_file_counts_examples_and_skips_blank_lines() -> None:
    r = report(f"{GOOD}\n\n{GOOD}\n")
    assert r.ok and r.n_examples == 2


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("{not json", None, "invalid JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"prompt": "x"}', "messages", "missing"),
        ('{"messages": []}', "messages", "non-empty"),
        (
            '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "messages[0].role",
            "unknown role",
        ),
        (
            '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}',
            "messages[0].content",
            "string",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', "messages", "assistant"),
    ],
)
def test_each_problem_names_line_and_field(line: str, field: str | None, words: str) -> None:
    r = report(f"{GOOD}\n{line}\n")
    assert not r.ok
    problem = r.problems[0]
    assert (problem.line, problem.field) == (2, field)
    assert words in problem.message


def test_invalid_utf8_and_empty_file() -> None:
    assert "UTF-8" in report(b"\xff\xfe\n").problems[0].message
    empty = report("")
    assert not empty.ok and "no examples" in empty.problems[0].message


def test_problems_are_capped_but_counted_as_more() -> None:
    r = report("{bad\n" * (MAX_PROBLEMS + 5))
    assert len(r.problems) == MAX_PROBLEMS and r.truncated
    assert "and more" in r.summary()
