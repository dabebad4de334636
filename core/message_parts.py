"""The parts of a conversation beyond plain text, in OpenAI's fine-tuning format:
message content as a list of text parts, the tools offered to the model (`tools`) and
the assistant's calls of them (`tool_calls`). Each is checked (a problem names its
field) and turned into what a chat template takes (transformers' tool-use convention:
a call's `arguments` as an object, where OpenAI sends a JSON string).

A key that is null counts as absent: Parquet writes every key of a struct column into
every row (null where a row lacks it), and a null carries nothing to train on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from core.json_values import Problems, UnreadableJson, parse_json, shown, text_problem

TOOLS_SHAPE = '{"type": "function", "function": {"name", "description", "parameters"}}'
_TEXT_PART_KEYS = ("type", "text")
_CALL_KEYS = ("id", "type", "function")
_FUNCTION_KEYS = ("name", "arguments")


def unknown_keys(obj: dict[Any, Any], known: Iterable[str]) -> list[Any]:
    """Keys of `obj` with a value that nothing reads: each would be silently dropped."""
    allowed = set(known)
    return [key for key, value in obj.items() if key not in allowed and value is not None]


def unread_keys_problems(obj: dict[Any, Any], known: tuple[str, ...], at: str, what: str) -> Problems:
    """A problem for each key of `obj` (`what`, at `at`) that nothing reads."""
    for key in unknown_keys(obj, known):
        yield f"{at}.{key}", f"is not a field of {what} ({', '.join(known)}); it would not be trained on"


# -- content ----------------------------------------------------------------------------------
def content_problems(value: Any, where: str) -> Problems:
    """`value` as a message's content: a string, or a list of text parts."""
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            yield where, problem
        return
    if not isinstance(value, list) or not value:
        kind = "an empty list" if isinstance(value, list) else type(value).__name__
        yield where, f'must be a string or a list of text parts {{"type": "text", "text": "..."}}, not {kind}'
        return
    for j, part in enumerate(value):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            yield at, 'must be a text part {"type": "text", "text": "..."}'
            continue
        if part.get("type") != "text":
            yield f"{at}.type", f"only text parts can be trained; this part is {shown(part.get('type'))}"
            continue
        yield from unread_keys_problems(part, _TEXT_PART_KEYS, at, "a text part")
        if (problem := text_problem(part.get("text"))) is not None:
            yield f"{at}.text", problem


def content_text(value: Any) -> str:
    """A valid content as one string: text parts joined as they are (no separator is
    added, so the model sees exactly the characters of the file); null is empty."""
    if value is None:
        return ""
    return value if isinstance(value, str) else "".join(part["text"] for part in value)


# -- tools --------------------------------------------------------------------------------------
def tools_of(value: Any) -> list[dict[str, Any]] | None:
    """A valid `tools` field as a list, None when no tool is offered; it may be JSON
    text (CSV cells, and Parquet files, where tools with different parameters cannot
    share one struct type)."""
    if value is None or value == "":
        return None
    tools: list[dict[str, Any]] = parse_json(value) if isinstance(value, str) else value
    return None if tools == [] else tools


def tools_problems(value: Any) -> tuple[list[tuple[str, str]], set[str] | None]:
    """The problems of a row's `tools` field and the names of the functions it offers
    (None when the row offers no tools, so any call is allowed)."""
    try:
        tools = tools_of(value)
    except UnreadableJson as exc:
        return [("tools", f"{exc} (tools given as text must be a JSON list)")], None
    if tools is None:
        return [], None
    if not isinstance(tools, list):
        return [("tools", f"must be a list of {TOOLS_SHAPE}")], None
    problems: list[tuple[str, str]] = []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function":
            problems.append((at, f"must be {TOOLS_SHAPE}: function tools are the ones chat templates render"))
        elif not isinstance(function, dict):
            problems.append((f"{at}.function", "must be an object with name, description and parameters"))
        elif not isinstance(function.get("name"), str) or not function["name"].strip():
            problems.append((f"{at}.function.name", "must be a non-empty string"))
        elif function["name"] in names:
            problems.append((f"{at}.function.name", f"{shown(function['name'])} is offered twice"))
        elif function.get("parameters") is not None and not isinstance(function["parameters"], dict):
            problems.append((f"{at}.function.parameters", "must be a JSON schema object"))
        else:
            names.add(function["name"])
    return problems, names


# -- tool calls ---------------------------------------------------------------------------------
def arguments_of(value: Any) -> dict[str, Any]:
    """A call's valid arguments as an object (chat templates write them out themselves)."""
    arguments: dict[str, Any] = parse_json(value) if isinstance(value, str) else value
    return arguments


def arguments_problem(value: Any) -> str | None:
    """Why `value` cannot be a call's arguments: a JSON object, as text (OpenAI's way)
    or as an object."""
    try:
        arguments = arguments_of(value)
    except UnreadableJson as exc:
        return f"must be a JSON object as text: {exc}"
    if not isinstance(arguments, dict):
        return "must be a JSON object (as text, as OpenAI sends it, or as an object)"
    return None


def call_name_problem(name: Any, tool_names: set[str] | None) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    if tool_names is not None and name not in tool_names:
        return f"calls {shown(name)}, which is not among the example's tools ({', '.join(sorted(tool_names))})"
    return None


def tool_calls_problems(calls: Any, where: str, tool_names: set[str] | None) -> Problems:
    """An assistant message's `tool_calls`: [{id, type: "function", function: {name, arguments}}]."""
    if not isinstance(calls, list) or not calls:
        yield where, 'must be a non-empty list of {"id", "type": "function", "function": {"name", "arguments"}}'
        return
    ids: set[str] = set()
    for k, call in enumerate(calls):
        at = f"{where}[{k}]"
        if not isinstance(call, dict):
            yield at, 'must be an object {"id", "type": "function", "function": {"name", "arguments"}}'
            continue
        yield from unread_keys_problems(call, _CALL_KEYS, at, "a tool call")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id.strip():
            yield f"{at}.id", "must be a non-empty string (the tool message that answers the call names it)"
        elif call_id in ids:
            yield f"{at}.id", f"{shown(call_id)} is used by another call of this message"
        else:
            ids.add(call_id)
        if call.get("type") != "function":
            yield f"{at}.type", 'must be "function"'
        function = call.get("function")
        if not isinstance(function, dict):
            yield f"{at}.function", "must be an object with name and arguments"
            continue
        yield from unread_keys_problems(function, _FUNCTION_KEYS, f"{at}.function", "a function call")
        if (problem := call_name_problem(function.get("name"), tool_names)) is not None:
            yield f"{at}.function.name", problem
        if (problem := arguments_problem(function.get("arguments"))) is not None:
            yield f"{at}.function.arguments", problem


def template_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid tool calls as chat templates take them (arguments as an object)."""
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": arguments_of(call["function"]["arguments"])},
        }
        for call in calls
    ]
