"""Tool calls, content parts and ShareGPT: what is accepted (in every file type), what
each becomes for training, and each malformed case refused with its line and field."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest

from core.datasets import iter_examples
from core.formats import Example, Message
from tests.helpers import EXAMPLES as EXAMPLES_DIR
from tests.unit.test_datasets import WRITERS, as_jsonl, check

TOOLS_FILE = EXAMPLES_DIR / "chat_tools.jsonl"
SHAREGPT_FILE = EXAMPLES_DIR / "sharegpt.jsonl"

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOL_CHAT: dict[str, Any] = {
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C, snow"},
        {"role": "assistant", "content": "It is snowing, -3 degrees."},
    ],
    "tools": [WEATHER],
}
SHARE_CALLS: dict[str, Any] = {
    "conversations": [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": "-3 C, snow"},
        {"from": "gpt", "value": "It is snowing, -3 degrees."},
    ],
    "system": "Be brief.",
    "tools": json.dumps([WEATHER["function"]]),  # LLaMA-Factory's bare function objects, as JSON text
}


def rows_of(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read(content: bytes, file_type: str, fmt: str) -> list[Example]:
    return list(iter_examples(io.BytesIO(content), file_type, fmt))  # type: ignore[arg-type]


def with_text_tools(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet and CSV keep tools as JSON text (tools with different parameters cannot
    share one struct type)."""
    return row | {"tools": json.dumps(row["tools"])} if isinstance(row.get("tools"), list) else row


def test_the_example_files_are_valid() -> None:
    tools = check(TOOLS_FILE.read_bytes(), "jsonl")
    assert (tools.ok, tools.format, tools.n_examples) == (True, "chat", 24), tools.problems
    share = check(SHAREGPT_FILE.read_bytes(), "jsonl")
    assert (share.ok, share.format, share.n_examples) == (True, "sharegpt", 24), share.problems


def test_a_tool_calling_conversation_becomes_template_input() -> None:
    (example,) = read(as_jsonl([TOOL_CHAT]), "jsonl", "chat")
    assert example.tools == [WEATHER]
    user, call, result, answer = example.messages
    assert user == Message("user", "Weather in Oslo?", 0)  # text parts joined as they are
    # arguments as an object, as chat templates take them (OpenAI sends a JSON string)
    assert call.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    ]
    assert (call.content, call.weight) == ("", 1)
    assert result.for_template() == {"role": "tool", "content": "-3 C, snow", "tool_call_id": "call_1"}
    assert answer.for_template() == {"role": "assistant", "content": "It is snowing, -3 degrees."}


def test_sharegpt_becomes_the_same_conversation() -> None:
    (example,) = read(as_jsonl([SHARE_CALLS]), "jsonl", "sharegpt")
    (chat,) = read(as_jsonl([TOOL_CHAT]), "jsonl", "chat")
    assert example.messages[0] == Message("system", "Be brief.", 0)
    assert example.messages[1:] == [Message("user", "Weather in Oslo?", 0), *chat.messages[1:]]
    assert example.tools == [WEATHER]  # bare function objects wrapped as function tools


@pytest.mark.parametrize("file_type", list(WRITERS))
def test_tool_calls_in_every_file_type(file_type: str) -> None:
    rows = [with_text_tools(row) for row in rows_of(TOOLS_FILE)]
    if file_type == "parquet":  # one column cannot hold both strings and lists of parts
        for row in rows:
            for message in row["messages"]:
                if isinstance(message["content"], list):
                    message["content"] = "".join(part["text"] for part in message["content"])
    report = check(WRITERS[file_type](rows), file_type)
    assert (report.ok, report.format, report.n_examples) == (True, "chat", 24), report.problems[:3]
    examples = read(WRITERS[file_type](rows), file_type, "chat")
    assert examples[0].tools is not None and examples[0].tools[0]["function"]["name"] == "get_weather"
    assert examples[0].messages[-3].tool_calls and examples[0].messages[-2].tool_call_id == "call_1"


@pytest.mark.parametrize("file_type", list(WRITERS))
@pytest.mark.parametrize("named", ["auto", "sharegpt"])
def test_sharegpt_in_every_file_type_detected_or_named(file_type: str, named: str) -> None:
    content = WRITERS[file_type](rows_of(SHAREGPT_FILE))
    report = check(content, file_type, named)
    assert (report.ok, report.format, report.n_examples) == (True, "sharegpt", 24), report.problems[:3]
    calling = read(content, file_type, "sharegpt")[2]
    assert [m.role for m in calling.messages] == ["user", "assistant", "tool", "assistant"]
    assert calling.messages[1].tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}
    ]


def changed(row: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `row` with the value at a dotted path (list indexes as numbers)
    replaced, or removed when `value` is DROP."""
    new = copy.deepcopy(row)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = new
    for part in parents:
        target = target[part]
    if value is DROP:
        del target[last]
    else:
        target[last] = value
    return new


class _Drop:
    def __repr__(self) -> str:  # shown in the test ids
        return "DROP"


DROP = _Drop()
BAD_CHATS = [
    ("messages.1.tool_calls", {"id": "x"}, "messages[1].tool_calls", "non-empty list"),
    ("messages.1.tool_calls.0.id", DROP, "messages[1].tool_calls[0].id", "non-empty string"),
    ("messages.1.tool_calls.0.type", "code", "messages[1].tool_calls[0].type", '"function"'),
    (
        "messages.1.tool_calls.0.function.arguments",
        "{city: Oslo}",
        "messages[1].tool_calls[0].function.arguments",
        "JSON object as text",
    ),
    (
        "messages.1.tool_calls.0.function.arguments",
        "[1]",
        "messages[1].tool_calls[0].function.arguments",
        "JSON object",
    ),
    (
        "messages.1.tool_calls.0.function.name",
        "get_time",
        "messages[1].tool_calls[0].function.name",
        "not among the example's tools",
    ),
    ("messages.1.tool_calls.0.function.strict", True, "messages[1].tool_calls[0].function.strict", "not a field"),
    ("messages.1.content", DROP, None, None),  # a tool-calling turn may have no content: valid
    ("tools", [], None, None),  # no tools offered: valid, as is
    ("tools", "[]", None, None),  # the same as JSON text
    ("messages.3.content", None, "messages[3].content", "must be a string or a list of text parts"),
    ("messages.2.tool_call_id", DROP, "messages[2].tool_call_id", "must name a call"),
    ("messages.2.tool_call_id", "call_9", "messages[2].tool_call_id", "(call_1); got 'call_9'"),
    ("messages.2.name", "get_weather", "messages[2].name", "named by its tool_call_id"),
    ("messages.2.weight", 1, "messages[2].weight", "only assistant messages take a weight"),
    ("messages.0.tool_calls", [CALL], "messages[0].tool_calls", "only assistant messages make tool calls"),
    ("messages.1.function_call", {"name": "f"}, "messages[1].function_call", "deprecated function calling"),
    ("messages.3.refusal", "no", "messages[3].refusal", "not a field of assistant messages"),
    (
        "messages.0.content.1",
        {"type": "image_url", "image_url": {"url": "x"}},
        "messages[0].content[1].type",
        "only text parts can be trained",
    ),
    ("messages.0.content.1.text", 3, "messages[0].content[1].text", "must be a string"),
    ("messages.0.content.0.cache", "x", "messages[0].content[0].cache", "not a field of a text part"),
    ("messages.0.content", [], "messages[0].content", "not an empty list"),
    ("messages.0.name", "", "messages[0].name", "non-empty string"),
    ("tools", {"name": "x"}, "tools", "must be a list"),
    ("tools", "[oops", "tools", "invalid JSON"),
    ("tools.0.type", "retrieval", "tools[0]", "function tools"),
    ("tools.0.function.name", DROP, "tools[0].function.name", "non-empty string"),
    ("tools.0.function.parameters", "city", "tools[0].function.parameters", "JSON schema object"),
    ("parallel_tool_calls", "no", "parallel_tool_calls", "true or false"),
    ("functions", [WEATHER["function"]], "functions", "not a field of format chat"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "words"), BAD_CHATS, ids=[f"{c[0]}={c[1]!r}"[:60] for c in BAD_CHATS]
)
def test_each_tool_and_content_problem_names_line_and_field(path: str, value: Any, field: str | None, words) -> None:  # type: ignore[no-untyped-def]
    report = check(as_jsonl([TOOL_CHAT, changed(TOOL_CHAT, path, value)]), "jsonl")
    if field is None:
        assert report.ok, report.problems
        return
    assert not report.ok
    problem = report.problems[0]
    assert (problem.line, problem.row, problem.field) == (2, 2, field), report.problems
    assert words in problem.message


def test_parallel_calls_only_where_allowed() -> None:
    second = dict(CALL, id="call_2")
    two_calls = changed(TOOL_CHAT, "messages.1.tool_calls", [CALL, second])
    two_calls["messages"].insert(3, {"role": "tool", "tool_call_id": "call_2", "content": "-3 C"})
    assert check(as_jsonl([two_calls]), "jsonl").ok
    problem = check(as_jsonl([two_calls | {"parallel_tool_calls": False}]), "jsonl").problems[0]
    assert (problem.field, problem.message) == (
        "messages[1].tool_calls",
        "makes 2 calls, but parallel_tool_calls is false",
    )
    answered_twice = copy.deepcopy(TOOL_CHAT)
    answered_twice["messages"].insert(3, answered_twice["messages"][2])
    assert check(as_jsonl([answered_twice]), "jsonl").problems[0].field == "messages[3].tool_call_id"


BAD_SHAREGPT = [
    ("conversations", [], "conversations", "non-empty list"),
    ("conversations.0.from", "robot", "conversations[0].from", "unknown speaker 'robot'"),
    ("conversations.0.from", ["human"], "conversations[0].from", "unknown speaker"),
    ("conversations.3.value", 42, "conversations[3].value", "must be a string"),
    ("conversations.0.weight", 0, "conversations[0].weight", "not a field of a ShareGPT turn"),
    ("conversations.1.value", "get_weather(Oslo)", "conversations[1].value", "invalid JSON"),
    ("conversations.1.value", '{"name": "get_weather"}', "conversations[1].value.arguments", "JSON object"),
    ("conversations.1.value", '{"name": "get_time", "arguments": {}}', "conversations[1].value.name", "not among"),
    (
        "conversations.1.value",
        '[{"name": "get_weather", "arguments": {}, "id": 1}]',
        "conversations[1].value[0].id",
        "not a field of a call",
    ),
    ("conversations.1.from", "human", "conversations[2].from", "must answer a call of the function_call turn"),
    ("system", 7, "system", "must be a string"),
    ("tools", "[{}", "tools", "invalid JSON"),
    ("id", "abc-1", "id", "not a field of format sharegpt (conversations, system, tools)"),
]


@pytest.mark.parametrize(
    ("path", "value", "field", "words"), BAD_SHAREGPT, ids=[f"{c[0]}={c[1]!r}"[:60] for c in BAD_SHAREGPT]
)
def test_each_sharegpt_problem_names_line_and_field(path: str, value: Any, field: str, words: str) -> None:
    report = check(as_jsonl([SHARE_CALLS, changed(SHARE_CALLS, path, value)]), "jsonl")
    problem = report.problems[0]
    assert (problem.line, problem.row, problem.field) == (2, 2, field), report.problems
    assert words in problem.message


def test_sharegpt_needs_a_reply_to_train_on() -> None:
    row = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"}]}
    problem = check(as_jsonl([row]), "jsonl", "sharegpt").problems[0]
    assert (problem.field, problem.message) == (
        "conversations",
        "needs at least one gpt or function_call turn to train on",
    )
