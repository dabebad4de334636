"""The files API against the real Postgres: uploads, validation errors with line
numbers, limits enforced while streaming, and deletion rules."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import File
from core.settings import get_settings
from tests.helpers import EXAMPLES, assert_error, chat, file_rows, jsonl, stored_objects, upload, upload_ok


def test_upload_reports_size_digest_and_examples(client) -> None:  # type: ignore[no-untyped-def]
    content = (EXAMPLES / "chat.jsonl").read_bytes()
    body = upload(client, content, "chat.jsonl").json()
    assert body["object"] == "file" and body["id"].startswith("file-")
    assert (body["status"], body["purpose"], body["filename"]) == ("processed", "fine-tune", "chat.jsonl")
    assert body["bytes"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["examples"] == 36 and body["tasks"] is None
    assert client.get(f"/v1/files/{body['id']}").json() == body
    assert client.get(f"/v1/files/{body['id']}/content").content == content
    listed = client.get("/v1/files", params={"limit": 100}).json()
    assert listed["object"] == "list" and body["id"] in [f["id"] for f in listed["data"]]


@pytest.mark.parametrize(
    ("content", "line", "field"),
    [
        (jsonl(chat(), b"{oops"), 2, None),
        (jsonl(chat(), chat(), b'"just a string"'), 3, None),
        (jsonl({"msgs": [{"role": "user", "content": "x"}]}), 1, None),
        (
            jsonl(chat(), {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}),
            2,
            "messages[0].role",
        ),
        (jsonl({"messages": [{"role": "user", "content": "only a question"}]}), 1, "messages"),
        (b"", None, None),
    ],
    ids=["malformed-json", "not-an-object", "unknown-format", "unknown-role", "no-assistant", "empty-file"],
)
def test_invalid_files_get_400_with_line_and_field(client, content: bytes, line, field) -> None:  # type: ignore[no-untyped-def]
    response = upload(client, content)
    error = assert_error(response, 400, param="file", code="invalid_file")
    first = error["details"][0]
    assert (first["line"], first["field"]) == (line, field)
    if line is not None:
        assert f"line {line}" in error["message"]
    # Kept as an `error` file so its problems can be read again, never as usable data.
    kept = client.get(f"/v1/files/{error['file']['id']}").json()
    assert kept["status"] == "error" and kept["problems"] == error["details"]


def test_a_file_over_the_limit_is_refused_while_streaming_and_nothing_is_stored(client) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    before_rows, before_objects = file_rows(), stored_objects()
    limit, settings.max_upload_bytes = settings.max_upload_bytes, 2048
    try:
        big = jsonl(*[chat("x" * 100, "y" * 100) for _ in range(100)])
        assert_error(upload(client, big), 413, param="file", code="file_too_large")
    finally:
        settings.max_upload_bytes = limit
    assert file_rows() == before_rows
    assert stored_objects() == before_objects
    assert not any((settings.storage_root / ".tmp").iterdir())


def test_bad_form_requests(client) -> None:  # type: ignore[no-untyped-def]
    assert_error(upload(client, jsonl(chat()), purpose="assistants"), 400, param="purpose", code="invalid_purpose")
    no_file = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"other": ("x", b"y")})
    assert_error(no_file, 400, param="file", code="missing_file")
    not_multipart = client.post("/v1/files", json={"purpose": "fine-tune"})
    assert_error(not_multipart, 400, param="file", code="invalid_content_type")


def test_unknown_ids_are_404(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/v1/files/file-nope", "/v1/files/file-nope/content"):
        assert_error(client.get(path), 404, code="not_found")
    assert_error(client.delete("/v1/files/file-nope"), 404, code="not_found")
    assert_error(client.get("/v1/files", params={"after": "file-nope"}), 404, param="after")


def test_delete_removes_row_and_bytes(client) -> None:  # type: ignore[no-untyped-def]
    file_id = upload_ok(client, jsonl(chat()))
    with session_scope() as session:
        key = session.scalar(select(File.storage_key).where(File.id == file_id))
    path = get_settings().storage_root / key
    assert path.exists()
    assert client.delete(f"/v1/files/{file_id}").json() == {"id": file_id, "object": "file", "deleted": True}
    assert not path.exists()
    assert_error(client.get(f"/v1/files/{file_id}"), 404)


QA = {
    "context": "Paris is the capital of France.",
    "question": "Capital of France?",
    "answers": {"text": ["Paris"], "answer_start": [0]},
}


@pytest.mark.parametrize(
    ("filename", "content", "where", "field", "words"),
    [
        (
            "mixed.jsonl",
            jsonl(chat(), {"prompt": "p", "completion": "c"}),
            ("line", 2),
            None,
            "format prompt_completion",
        ),
        (
            "qa.jsonl",
            jsonl(QA, dict(QA, answers={"text": ["Paris"], "answer_start": [5]})),
            ("line", 2),
            "answers.answer_start[0]",
            "does not point at the answer text",
        ),
        ("pc.jsonl", jsonl({"prompt": "p", "completion": ""}), ("line", 1), "completion", "must not be empty"),
        ("table.csv", b"question,reply\nq,a\n", None, None, "the CSV columns are question, reply"),
        ("data.parquet", b"this is not parquet", None, None, "not a Parquet file"),
        ("data.json", b'[{"text": "fine"}, {"text": 7}]', ("row", 2), "text", "must be a string"),
        (
            "tasks.jsonl",
            jsonl(chat() | {"task": "a"}, chat() | {"task": "b"}, chat()),
            ("line", 3),
            "task",
            "this example has no task, but line 1 has task 'a'",
        ),
        ("tasks.csv", b"prompt,completion,task\np,c,\np,c,t\n", ("line", 3), "task", "has a task, but line 2 has no"),
        ("task.jsonl", jsonl(chat() | {"task": 7}), ("line", 1), "task", "must be a string, not int"),
    ],
    ids=[
        "mixed-formats",
        "qa-answer-start",
        "empty-completion",
        "csv-columns",
        "not-parquet",
        "json-array-row",
        "task-on-some-lines",
        "task-on-some-csv-records",
        "task-not-a-string",
    ],
)
def test_format_problems_through_the_api(client, filename, content, where, field, words) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(upload(client, content, filename), 400, param="file", code="invalid_file")
    first = error["details"][0]
    assert words in first["message"] and first["field"] == field
    if where:
        assert first[where[0]] == where[1] and f"{where[0]} {where[1]}" in error["message"]


def test_the_examples_per_task_are_on_the_file(client) -> None:  # type: ignore[no-untyped-def]
    body = upload(client, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl").json()
    assert (body["status"], body["examples"]) == ("processed", 24)
    assert body["tasks"] == {"arithmetic": 12, "spelling": 12}
    assert client.get(f"/v1/files/{body['id']}").json()["tasks"] == body["tasks"]


def test_a_named_format_and_every_file_type_through_the_api(client) -> None:  # type: ignore[no-untyped-def]
    for path in sorted(EXAMPLES.glob("*")):
        body = upload(client, path.read_bytes(), path.name).json()
        assert body["status"] == "processed", (path.name, body)
        assert (
            body["examples"] > 0
            and body["file_type"]
            == {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[path.suffix]
        )
    refused = upload(client, jsonl(chat()), data_format="text")
    error = assert_error(refused, 400, param="file", code="invalid_file")
    assert error["details"][0]["field"] == "text"
    assert_error(upload(client, jsonl(chat()), data_format="yaml"), 400, param="format", code="invalid_format")
