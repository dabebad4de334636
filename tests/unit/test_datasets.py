"""Validation of every format in every file type: problems name line (or row) and field."""

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.datasets import MAX_PROBLEMS, detect_file_type, iter_examples, validate
from core.formats import UNANSWERABLE_REPLY, Message

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PC = {"prompt": "2+2=", "completion": "4"}
INSTRUCTION = {"instruction": "Translate to French", "input": "cat", "output": "chat"}
QA = {
    "context": "پایتخت ایران تهران است.",
    "question": "پایتخت ایران کجاست؟",
    "answers": {"text": ["تهران"], "answer_start": [13]},
}
TEXT = {"text": "Once upon a time 🚀"}
SHAREGPT = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
EXAMPLES = {
    "chat": CHAT,
    "sharegpt": SHAREGPT,
    "prompt_completion": PC,
    "instruction": INSTRUCTION,
    "qa": QA,
    "text": TEXT,
}


def as_jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def as_json(rows: list) -> bytes:
    return json.dumps(rows, ensure_ascii=False).encode()


def as_csv(rows: list) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list({key: None for row in rows for key in row}))
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in r.items()}
        )
    return out.getvalue().encode()


def as_parquet(rows: list) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


WRITERS = {"jsonl": as_jsonl, "json": as_json, "csv": as_csv, "parquet": as_parquet}


def check(content: bytes, file_type: str, fmt: str = "auto"):  # type: ignore[no-untyped-def]
    return validate(io.BytesIO(content), file_type, fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("file_type", list(WRITERS))
@pytest.mark.parametrize("fmt", list(EXAMPLES))
def test_every_format_in_every_file_type_is_detected_and_read(fmt: str, file_type: str) -> None:
    content = WRITERS[file_type]([EXAMPLES[fmt]] * 3)
    report = check(content, file_type)
    assert report.ok, report.problems
    assert (report.n_examples, report.format) == (3, fmt)
    examples = list(iter_examples(io.BytesIO(content), file_type, fmt))  # type: ignore[arg-type]
    assert len(examples) == 3
    if fmt == "text":
        assert examples[0].text == TEXT["text"]
    else:
        assert examples[0].messages[-1].role == "assistant" and examples[0].messages[-1].weight == 1


def test_conversions_to_chat() -> None:
    def first(row: dict, fmt: str):  # type: ignore[no-untyped-def]
        return next(iter_examples(io.BytesIO(as_jsonl([row])), "jsonl", fmt)).messages

    assert first(PC, "prompt_completion") == [Message("user", "2+2=", 0), Message("assistant", "4", 1)]
    assert first(INSTRUCTION, "instruction") == [
        Message("user", "Translate to French\n\ncat", 0),
        Message("assistant", "chat", 1),
    ]
    qa = first(QA, "qa")
    assert qa[0].content.startswith(QA["context"]) and qa[1] == Message("assistant", "تهران", 1)
    unanswerable = dict(QA, answers={"text": [], "answer_start": []})
    assert first(unanswerable, "qa")[1].content == UNANSWERABLE_REPLY
    weighted = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b", "weight": 0},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    assert [m.weight for m in first(weighted, "chat")] == [0, 0, 0, 1]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"messages": []}, "messages", "non-empty"),
        (
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "messages[0].role",
            "unknown role",
        ),
        (
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]},
            "messages[0].content",
            "string",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "messages", "assistant"),
        (
            {"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
            "messages[0].weight",
            "only assistant",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
            "messages[1].weight",
            "0 or 1",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
            "messages",
            "nothing to train on",
        ),
        ({"prompt": "p", "completion": ""}, "completion", "must not be empty"),
        ({"prompt": "p", "completion": 3}, "completion", "string"),
        ({"instruction": "", "output": "o"}, "instruction", "must not be empty"),
        (
            dict(QA, answers={"text": ["تهران"], "answer_start": [3]}),
            "answers.answer_start[0]",
            "does not point at the answer text",
        ),
        (dict(QA, answers={"text": ["x"], "answer_start": []}), "answers.answer_start", "one per answer"),
        (dict(QA, answers="تهران"), "answers", "must be an object"),
        ({"text": ""}, "text", "must not be empty"),
    ],
)
def test_each_problem_names_line_and_field(row: dict, field: str, words: str) -> None:
    fmt = next(name for name, example in EXAMPLES.items() if set(example) & set(row))
    report = check(as_jsonl([EXAMPLES[fmt], row]), "jsonl")
    assert not report.ok
    problem = report.problems[0]
    assert (problem.line, problem.row, problem.field) == (2, 2, field)
    assert words in problem.message


def test_mixed_formats_in_one_file_are_refused() -> None:
    report = check(as_jsonl([CHAT, CHAT, PC]), "jsonl")
    assert report.problems[0].line == 3
    assert "format prompt_completion" in report.problems[0].message and "from line 1" in report.problems[0].message


def test_a_named_format_is_enforced() -> None:
    report = check(as_jsonl([CHAT]), "jsonl", "prompt_completion")
    assert [p.field for p in report.problems] == ["prompt", "completion", "messages"]
    assert "is not a field of format prompt_completion (prompt, completion)" in report.problems[2].message


def test_csv_without_the_needed_columns() -> None:
    report = check(b"prompt,answer\nhi,there\n", "csv")
    assert "the CSV columns are prompt, answer" in report.problems[0].message
    named = check(b"question,answer\nq,a\n", "csv", "qa")
    assert "format qa needs context, question, answers" in named.problems[0].message


def test_csv_rows_report_their_line() -> None:
    content = b'prompt,completion\n"multi\nline",ok\nfine,\n'
    problem = check(content, "csv").problems[0]
    assert (problem.line, problem.row, problem.field) == (4, 2, "completion")


def test_parquet_that_is_not_parquet_and_json_that_is_not_an_array() -> None:
    assert "not a Parquet file" in check(b"PAR1 but not really", "parquet").problems[0].message
    assert "array" in check(b'{"text": "x"}', "json").problems[0].message
    problem = check(as_parquet([TEXT, {"text": ""}]), "parquet").problems[0]
    assert (problem.line, problem.row, problem.field) == (None, 2, "text")


def test_file_type_detection() -> None:
    assert detect_file_type("d.PARQUET", b"") == "parquet"
    assert detect_file_type("upload", b"PAR1xxxx") == "parquet"
    assert detect_file_type("d.json", b'  [{"a": 1}]') == "json"
    assert detect_file_type("d.json", b'{"a": 1}\n{"a": 2}') == "jsonl"
    assert detect_file_type("d.csv", b"a,b") == "csv"


def test_invalid_utf8_malformed_json_and_empty_file() -> None:
    assert "UTF-8" in check(b"\xff\xfe\n", "jsonl").problems[0].message
    assert "invalid JSON" in check(b"{oops\n", "jsonl").problems[0].message
    assert "JSON object" in check(b"[1]\n", "jsonl").problems[0].message
    assert "no known format" in check(b'{"foo": 1}\n', "jsonl").problems[0].message
    empty = check(b"", "jsonl")
    assert not empty.ok and "no examples" in empty.problems[0].message


def test_problems_are_capped_but_counted_as_more() -> None:
    report = check(b"{bad\n" * (MAX_PROBLEMS + 5), "jsonl")
    assert len(report.problems) == MAX_PROBLEMS and report.truncated
    assert "and more" in report.summary()


@pytest.mark.parametrize("file_type", list(WRITERS))
def test_a_column_the_format_does_not_read_is_refused(file_type: str) -> None:
    report = check(WRITERS[file_type]([PC | {"id": "q1"}, PC | {"id": "q2"}]), file_type)
    problem = report.problems[0]
    assert (problem.row, problem.field) == (1, "id")
    assert (
        problem.message == "is not a field of format prompt_completion (prompt, completion); it would not be trained on"
    )
    # A null counts as absent: Parquet gives every row every column.
    assert check(as_parquet([INSTRUCTION, {"instruction": "Say hi", "input": None, "output": "hi"}]), "parquet").ok


def test_csv_cells_past_the_header_are_refused() -> None:
    problem = check(b"prompt,completion\nhi,there,surplus\n", "csv").problems[0]
    assert (problem.line, problem.field, problem.message) == (
        2,
        None,
        "this record has more cells than the header has columns",
    )


def test_an_unread_key_is_named_in_text_any_database_stores() -> None:
    row = PC | {"x\x00y": 1, "\ud800": 2, "k" * 1000: 3}
    fields = [p.field for p in check(json.dumps(row).encode() + b"\n", "jsonl").problems]
    assert fields == ["x\\x00y", "\\ud800", "k" * 499 + "…"]
