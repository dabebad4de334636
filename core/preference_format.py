"""The preference format: a prompt and two assistant replies, one preferred over the other
(what DPO trains on). Two shapes, the same format (`preference`):

- OpenAI's: {"input": {"messages": [...], "tools"?: [...]},
  "preferred_output": [{"role": "assistant", "content": ...}], "non_preferred_output": [...]}
- TRL's: {"prompt", "chosen", "rejected"}, each a string (a user turn and assistant
  replies) or a list of messages (the prompt's conversation, the assistant's replies),
  with "tools"? beside them.

Every field is checked and a field the service would not train on is refused, never
dropped. A row becomes a `PreferencePair` of plain message dicts, which the chat
template renders as they are (core.preferences)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from core.json_values import Problems
from core.json_values import shown as _shown
from core.json_values import text_problem as _text_problem

OPENAI_KEYS = ("input", "preferred_output", "non_preferred_output")
TRL_KEYS = ("prompt", "chosen", "rejected")
PROMPT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class PreferencePair:
    """A prompt conversation and the two assistant continuations, as chat-template messages."""

    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    tools: list[dict[str, Any]] | None = None


def _field_name(key: Any) -> str:
    """A key of the row as a problem's field, which is stored: NUL and lone surrogates
    escaped (Postgres text holds neither), at most 100 characters."""
    text = str(key).encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= 100 else text[:99] + "…"


def _unknown_keys(value: dict[str, Any], allowed: tuple[str, ...], where: str) -> Problems:
    for key in value:
        if key not in allowed:
            yield f"{where}{_field_name(key)}", f"unknown field; expected {', '.join(allowed)}"


def _message_problems(message: Any, where: str, roles: tuple[str, ...]) -> Problems:
    if not isinstance(message, dict):
        yield where, "must be an object with role and content"
        return
    yield from _unknown_keys(message, ("role", "content"), f"{where}.")
    if message.get("role") not in roles:
        yield f"{where}.role", f"unknown role {_shown(message.get('role'))}; expected {' or '.join(roles)}"
    if (problem := _text_problem(message.get("content"))) is not None:
        yield f"{where}.content", problem
    elif roles == ("assistant",) and not message["content"].strip():
        yield f"{where}.content", "must not be empty"


def _messages_problems(messages: Any, where: str, roles: tuple[str, ...]) -> Problems:
    if not isinstance(messages, list) or not messages:
        yield where, "must be a non-empty list of {role, content} objects"
        return
    for i, message in enumerate(messages):
        yield from _message_problems(message, f"{where}[{i}]", roles)


def _prompt_problems(messages: Any, where: str) -> Problems:
    yield from _messages_problems(messages, where, PROMPT_ROLES)
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        if messages[-1].get("role") == "assistant":
            yield where, "must not end with an assistant message: the outputs are the assistant's reply to it"


def _tools_problems(tools: Any, where: str) -> Problems:
    if tools is None:
        return
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        yield where, 'must be a list of tool objects ({"type": "function", "function": {...}})'


def _text_or_messages(value: Any, where: str, messages: Problems, what: str) -> Problems:
    """A string, or a list of messages (checked by `messages`)."""
    if value is None:
        yield where, "missing"
    elif isinstance(value, list):
        yield from messages
    elif not isinstance(value, str):
        yield where, f"must be a string or a list of {what}, not {type(value).__name__}"
    elif (problem := _text_problem(value)) is not None:
        yield where, problem
    elif not value.strip() and what != "messages":
        yield where, "must not be empty"


def _reply_problems(value: Any, where: str) -> Problems:
    """A reply: a string (TRL's shape) or a list of assistant messages."""
    yield from _text_or_messages(value, where, _messages_problems(value, where, ("assistant",)), "assistant messages")


def _openai_problems(row: dict[str, Any]) -> Problems:
    yield from _unknown_keys(row, OPENAI_KEYS, "")
    given = row.get("input")
    if not isinstance(given, dict):
        yield "input", 'must be an object {"messages": [...], "tools"?: [...]}'
    else:
        yield from _unknown_keys(given, ("messages", "tools"), "input.")
        yield from _prompt_problems(given.get("messages"), "input.messages")
        yield from _tools_problems(given.get("tools"), "input.tools")
    for key in OPENAI_KEYS[1:]:
        if isinstance(row.get(key), list):
            yield from _reply_problems(row[key], key)
        else:
            yield key, 'must be a list of assistant messages, e.g. [{"role": "assistant", "content": "..."}]'


def _trl_problems(row: dict[str, Any]) -> Problems:
    yield from _unknown_keys(row, (*TRL_KEYS, "tools"), "")
    prompt = row.get("prompt")
    yield from _text_or_messages(prompt, "prompt", _prompt_problems(prompt, "prompt"), "messages")
    yield from _reply_problems(row.get("chosen"), "chosen")
    yield from _reply_problems(row.get("rejected"), "rejected")
    yield from _tools_problems(row.get("tools"), "tools")


def problems(row: dict[str, Any]) -> Iterator[tuple[str | None, str]]:
    """What is wrong with a row of either shape, field by field."""
    found = list(_openai_problems(row) if "input" in row else _trl_problems(row))
    yield from found
    if not found:
        pair = to_pair(row)
        if pair.chosen == pair.rejected:
            preferred = "preferred_output" if "input" in row else "chosen"
            yield preferred, "is the same as the reply it is preferred over: nothing to learn"


def _as_messages(value: str | list[dict[str, str]], role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def to_pair(row: dict[str, Any]) -> PreferencePair:
    """A validated row as a pair of conversations."""
    if "input" in row:
        given = row["input"]
        return PreferencePair(
            _as_messages(given["messages"], "user"),
            _as_messages(row["preferred_output"], "assistant"),
            _as_messages(row["non_preferred_output"], "assistant"),
            given.get("tools") or None,
        )
    return PreferencePair(
        _as_messages(row["prompt"], "user"),
        _as_messages(row["chosen"], "assistant"),
        _as_messages(row["rejected"], "assistant"),
        row.get("tools") or None,
    )
