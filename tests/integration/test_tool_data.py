"""Tool-calling and ShareGPT data through the API and real workers: uploads (and the
malformed ones refused with line and field), the preview of a tool call's trained
spans, the refusal of a model whose chat template cannot render tools (preview and
pre-flight), and (slow) training jobs on tool calls and on ShareGPT."""

from __future__ import annotations

import json

import pytest

from tests.helpers import EXAMPLES, assert_error, jsonl, upload, upload_ok
from tests.integration.test_data_and_specs_api import preflight
from tests.integration.test_recipes import train, train_losses

TOOLS_FILE = EXAMPLES / "chat_tools.jsonl"


@pytest.fixture(scope="module")
def tools_file(client_module) -> str:  # type: ignore[no-untyped-def]
    return upload_ok(client_module, TOOLS_FILE.read_bytes(), "chat_tools.jsonl")


@pytest.mark.parametrize(
    ("name", "named", "fmt"),
    [
        ("chat_tools.jsonl", None, "chat"),
        ("sharegpt.jsonl", None, "sharegpt"),
        ("sharegpt.jsonl", "sharegpt", "sharegpt"),
    ],
)
def test_tool_and_sharegpt_files_upload(client_module, name: str, named: str | None, fmt: str) -> None:  # type: ignore[no-untyped-def]
    response = upload(client_module, (EXAMPLES / name).read_bytes(), name, data_format=named)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["format"]) == ("processed", fmt)


def test_malformed_tool_data_is_refused_with_line_and_field(client_module) -> None:  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in TOOLS_FILE.read_text().splitlines()[:3]]
    rows[2]["messages"][2]["tool_call_id"] = "call_404"  # the third example's tool result
    image = {
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
            {"role": "assistant", "content": "A cat."},
        ]
    }
    for content, line, field, words in [
        (jsonl(*rows), 3, "messages[2].tool_call_id", "got 'call_404'"),
        (jsonl(rows[0], image), 2, "messages[0].content[0].type", "only text parts can be trained"),
        (jsonl(rows[0] | {"functions": []}), 1, "functions", "not a field of format chat"),
    ]:
        error = assert_error(upload(client_module, content), 400, param="file", code="invalid_file")
        first = error["details"][0]
        assert (first["line"], first["field"]) == (line, field) and words in first["message"], error
        assert f"line {line}" in error["message"]


def test_the_preview_marks_the_tool_call_as_trained(client_module, tools_file: str) -> None:  # type: ignore[no-untyped-def]
    preview = client_module.get(f"/v1/files/{tools_file}/preview", params={"model": "tiny-llama", "n": 1}).json()
    first = preview["data"][0]
    trained = [s["text"] for s in first["segments"] if s["trained"]]
    assert trained == [
        '{"name": "get_weather", "parameters": {"city": "Tehran"}}<|eot_id|>',
        "It is sunny in Tehran, 31 degrees.<|eot_id|>",
    ]
    result = '<|start_header_id|>ipython<|end_header_id|>\n\n{"temperature_c": 31, "sky": "sunny"}<|eot_id|>'
    assert result in first["marked"]  # the tool's result is an input, outside [[ ]]
    assert '[[{"name": "get_weather"' in first["marked"]


def test_a_template_that_cannot_render_tools_is_refused(client_module, tools_file: str, no_tools_model: str) -> None:  # type: ignore[no-untyped-def]
    response = client_module.get(f"/v1/files/{tools_file}/preview", params={"model": no_tools_model})
    error = assert_error(response, 400, param="model", code="chat_template_cannot_render")
    assert f"The chat template of {no_tools_model} cannot render assistant tool calls" in error["message"]
    job = preflight(client_module, model=no_tools_model, training_file=tools_file)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["param"]) == ("chat_template_cannot_render", "model")
    assert "cannot render assistant tool calls" in job["error"]["message"]


def test_a_job_names_the_sharegpt_format(client_module) -> None:  # type: ignore[no-untyped-def]
    file_id = upload_ok(client_module, (EXAMPLES / "sharegpt.jsonl").read_bytes(), "sharegpt.jsonl")
    job = preflight(client_module, training_file=file_id, qlora={"data": {"format": "sharegpt"}})
    assert (job["status"], job["qlora"]["data"]["format"], job["statistics"]["examples"]) == ("queued", "sharegpt", 24)
    wrong = client_module.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": file_id, "qlora": {"data": {"format": "chat"}}},
    )
    assert "validated as 'sharegpt'" in assert_error(wrong, 400, "qlora.data.format", "format_mismatch")["message"]


@pytest.mark.slow
@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("name", ["chat_tools.jsonl", "sharegpt.jsonl"])
def test_tool_calls_and_sharegpt_train(client_module, name: str) -> None:  # type: ignore[no-untyped-def]
    file_id = upload_ok(client_module, (EXAMPLES / name).read_bytes(), name)
    job = train(client_module, file_id, training={"max_steps": 20})
    losses = train_losses(client_module, job["id"])
    assert sum(losses[-3:]) < sum(losses[:3]), losses
    assert job["statistics"]["trainable_tokens"] > 0 and job["statistics"]["chat_template"] == "model"
