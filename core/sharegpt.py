"""ShareGPT conversations, the layout of many hub datasets:

    {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}],
     "system": "...", "tools": "[...]"}

with LLaMA-Factory's function calling (`tools` a JSON list of function objects, bare or
in OpenAI's {"type": "function", "function": ...} shape): a `function_call` turn is the assistant calling
tools (its value a JSON object {"name", "arguments"}, or a list of them) and each
`observation` (or `tool`) turn after it is one call's result, in order. A row is checked
here and turned into an OpenAI chat row, which the chat format reads; the calls get the
ids `call_1`, `call_2`, ... that their results refer to."""

from __future__ import annotations

from typing import Any

from core.json_values import Problems, UnreadableJson, parse_json, shown, text_problem
from core.message_parts import arguments_problem, call_name_problem, tools_of, tools_problems, unread_keys_problems

# Each speaker as a chat role.
SPEAKERS = {
    "system": "system",
    "human": "user",
    "gpt": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
_TURN_KEYS = ("from", "value")
_CALL_KEYS = ("name", "arguments")
CALL_SHAPE = 'a JSON object {"name", "arguments"} or a list of them'


def _tools(value: Any) -> Any:
    """The row's tools in OpenAI's shape: LLaMA-Factory writes bare function objects
    {"name", "description", "parameters"}, which are wrapped as function tools."""
    try:
        tools = tools_of(value)
    except UnreadableJson:
        return value  # tools_problems says why
    if not isinstance(tools, list):
        return tools
    return [
        {"type": "function", "function": tool} if isinstance(tool, dict) and "type" not in tool else tool
        for tool in tools
    ]


def _calls(value: Any) -> tuple[list[Any], bool]:
    """A function_call turn's calls (its value is JSON text or already parsed), and
    whether they came as a list."""
    calls = parse_json(value) if isinstance(value, str) else value
    return (calls, True) if isinstance(calls, list) else ([calls], False)


def _calls_problems(value: Any, where: str, tool_names: set[str] | None) -> tuple[list[tuple[str | None, str]], int]:
    """The problems of a function_call turn's value, and how many calls it makes."""
    try:
        calls, listed = _calls(value)
    except UnreadableJson as exc:
        return [(where, f"must be {CALL_SHAPE}: {exc}")], 0
    if not calls or not all(isinstance(call, dict) for call in calls):
        return [(where, f"must be {CALL_SHAPE}")], 0
    problems: list[tuple[str | None, str]] = []
    for k, call in enumerate(calls):
        at = f"{where}[{k}]" if listed else where
        problems += unread_keys_problems(call, _CALL_KEYS, at, "a call")
        if (problem := call_name_problem(call.get("name"), tool_names)) is not None:
            problems.append((f"{at}.name", problem))
        if (problem := arguments_problem(call.get("arguments"))) is not None:
            problems.append((f"{at}.arguments", problem))
    return problems, len(calls)


def problems(row: dict[str, Any]) -> Problems:
    if row.get("system") is not None and (problem := text_problem(row["system"])) is not None:
        yield "system", problem
    tool_problems, tool_names = tools_problems(_tools(row.get("tools")))
    yield from tool_problems
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        yield "conversations", "must be a non-empty list of {from, value} turns"
        return
    unanswered = 0  # calls of the last function_call turn that no result has answered yet
    replies = 0
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            yield where, "must be an object with from and value"
            continue
        yield from unread_keys_problems(turn, _TURN_KEYS, where, "a ShareGPT turn")
        speaker = turn.get("from")
        if not isinstance(speaker, str) or speaker not in SPEAKERS:
            yield f"{where}.from", f"unknown speaker {shown(speaker)}; expected one of {', '.join(SPEAKERS)}"
            continue
        replies += SPEAKERS[speaker] == "assistant"
        if speaker == "function_call":
            call_problems, unanswered = _calls_problems(turn.get("value"), f"{where}.value", tool_names)
            yield from call_problems
            continue
        if (problem := text_problem(turn.get("value"))) is not None:
            yield f"{where}.value", problem
        if SPEAKERS[speaker] != "tool":
            unanswered = 0
        elif unanswered:
            unanswered -= 1
        else:
            yield f"{where}.from", f"{speaker} turns must answer a call of the function_call turn before them"
    if not replies:
        yield "conversations", "needs at least one gpt or function_call turn to train on"


def as_chat_row(row: dict[str, Any]) -> dict[str, Any]:
    """A valid ShareGPT row as an OpenAI chat row."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    made = 0
    waiting: list[str] = []  # ids of the calls whose results come next, in order
    for turn in row["conversations"]:
        role = SPEAKERS[turn["from"]]
        if turn["from"] == "function_call":
            calls = [
                {"id": f"call_{made + k}", "type": "function", "function": call}
                for k, call in enumerate(_calls(turn["value"])[0], start=1)
            ]
            made += len(calls)
            waiting = [call["id"] for call in calls]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif role == "tool":
            messages.append({"role": "tool", "tool_call_id": waiting.pop(0), "content": turn["value"]})
        else:
            messages.append({"role": role, "content": turn["value"]})
    return {"messages": messages, "tools": _tools(row.get("tools"))}
