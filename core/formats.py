"""Dataset formats: how each is recognised, what makes a row valid, and how a row
becomes the one shape training uses (a conversation, or raw text).

- chat (OpenAI's): {"messages": [{"role", "content", "weight"?, "name"?, "tool_calls"?, "tool_call_id"?}, ...],
  "tools"?, "parallel_tool_calls"?}
- sharegpt: {"conversations": [{"from", "value"}, ...], "system"?, "tools"?} (core.sharegpt)
- prompt_completion: {"prompt", "completion"}
- instruction (Alpaca): {"instruction", "input"?, "output"}
- qa (extractive, SQuAD style): {"context", "question", "answers": {"text": [...], "answer_start": [...]}}
- text: {"text"} for continued pre-training (every token is trained)
- preference: a prompt with a preferred and a rejected reply (DPO; core.preference_format)

Every format's rows may also name their task (`task`, core.tasks: multitask prompt tuning).

Nothing in a row is silently dropped: a key its format does not read (in the row, a
message, a tool call, a content part) is refused with its field, unless it is null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from core import sharegpt
from core.json_values import Problems, UnreadableJson, parse_json
from core.json_values import is_text as _is_text
from core.json_values import shown as _shown
from core.json_values import text_problem as _text_problem
from core.message_parts import (
    content_problems,
    content_text,
    template_tool_calls,
    tool_calls_problems,
    tools_of,
    tools_problems,
    unknown_keys,
)
from core.tasks import TASK_KEY, task_problem

FormatName = Literal["chat", "sharegpt", "prompt_completion", "instruction", "qa", "text", "preference"]
FORMATS: tuple[FormatName, ...] = (
    "chat",
    "sharegpt",
    "prompt_completion",
    "instruction",
    "qa",
    "text",
    "preference",
)
ROLES = ("system", "user", "assistant", "tool")
# The assistant's reply to a QA example whose answer list is empty (SQuAD 2 style).
UNANSWERABLE_REPLY = "The context does not contain the answer."


@dataclass
class Message:
    role: str
    content: str
    # Assistant turns only: 1 = trained on, 0 = context only.
    weight: int = 1
    # Assistant turns: the calls it makes, as chat templates take them (arguments as objects).
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None  # tool turns: the call this result answers
    name: str | None = None

    def for_template(self) -> dict[str, Any]:
        """The message as a chat template reads it: only the keys it has."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        extras = {"tool_calls": self.tool_calls, "tool_call_id": self.tool_call_id, "name": self.name}
        return message | {key: value for key, value in extras.items() if value is not None}


@dataclass
class Example:
    """What training consumes: a conversation, or (format text) raw text."""

    messages: list[Message] = field(default_factory=list)
    text: str | None = None
    tools: list[dict[str, Any]] | None = None  # the function tools the conversation offers
    task: str | None = None  # the example's task (core.tasks)


def _need_text(row: dict[str, Any], key: str, *, allow_empty: bool = False) -> Problems:
    if key not in row or row[key] is None:
        yield key, "missing"
    elif (problem := _text_problem(row[key])) is not None:
        yield key, problem
    elif not allow_empty and not row[key].strip():
        yield key, "must not be empty"


# -- chat ------------------------------------------------------------------------------------
# The keys a message of each role may have (a template is given all of them); any other
# would be dropped on the way to the template, so it is refused.
_MESSAGE_KEYS = {
    "system": ("role", "content", "name"),
    "user": ("role", "content", "name"),
    "assistant": ("role", "content", "name", "weight", "tool_calls"),
    "tool": ("role", "content", "tool_call_id"),
}
# Why a key a role does not take is refused, where a generic reason would not help.
_MISPLACED = {
    "weight": "only assistant messages take a weight",
    "tool_calls": "only assistant messages make tool calls",
    "tool_call_id": "only tool messages answer a tool call",
    "name": "a tool message is named by its tool_call_id",
    "function_call": "is OpenAI's deprecated function calling, which is not supported: use tool_calls",
}


def _message_problems(message: dict[str, Any], where: str, tool_names: set[str] | None) -> Problems:
    """One message's own problems (the conversation's order is checked by the caller)."""
    role = message.get("role")
    if role not in ROLES:
        yield f"{where}.role", f"unknown role {_shown(role)}; expected one of {', '.join(ROLES)}"
        return
    for key in unknown_keys(message, _MESSAGE_KEYS[role]):
        reason = _MISPLACED.get(key, f"is not a field of {role} messages; it would not be trained on")
        yield f"{where}.{key}", reason
    calls = message.get("tool_calls") if role == "assistant" else None
    if calls is not None:
        yield from tool_calls_problems(calls, f"{where}.tool_calls", tool_names)
    if message.get("content") is not None or calls is None:  # a tool-calling turn may leave content null
        yield from content_problems(message.get("content"), f"{where}.content")
    name = message.get("name") if role != "tool" else None
    if name is not None and (not _is_text(name) or not name.strip() or _text_problem(name) is not None):
        yield f"{where}.name", "must be a non-empty string"
    weight = message.get("weight")
    if role == "assistant" and weight is not None and (weight not in (0, 1) or isinstance(weight, bool)):
        yield f"{where}.weight", "must be 0 or 1"


def _chat_problems(row: dict[str, Any]) -> Problems:
    tool_problems, tool_names = tools_problems(row.get("tools"))
    yield from tool_problems
    parallel = row.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        yield "parallel_tool_calls", "must be true or false"
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        yield "messages", "must be a non-empty list of {role, content} objects"
        return
    trained = assistants = 0
    unanswered: set[str] = set()  # ids of the last assistant turn's calls not answered yet
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            yield where, "must be an object with role and content"
            continue
        yield from _message_problems(message, where, tool_names)
        role, calls = message.get("role"), message.get("tool_calls")
        if role == "assistant":
            assistants += 1
            trained += message.get("weight") in (None, 1)
            unanswered = (
                {c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)}
                if isinstance(calls, list)
                else set()
            )
            if parallel is False and isinstance(calls, list) and len(calls) > 1:
                yield f"{where}.tool_calls", f"makes {len(calls)} calls, but parallel_tool_calls is false"
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if isinstance(call_id, str) and call_id in unanswered:
                unanswered.discard(call_id)
            else:
                ids = ", ".join(sorted(unanswered)) or "none"
                yield (
                    f"{where}.tool_call_id",
                    f"must name a call of the assistant message before it that is not answered yet ({ids}); "
                    f"got {_shown(call_id)}",
                )
        else:
            unanswered = set()
    if not assistants:
        yield "messages", "needs at least one assistant message to train on"
    elif not trained:
        yield "messages", "every assistant message has weight 0: nothing to train on"


def _chat_message(message: dict[str, Any]) -> Message:
    role, calls, weight = message["role"], message.get("tool_calls"), message.get("weight")
    return Message(
        role,
        content_text(message.get("content")),
        (1 if weight is None else int(weight)) if role == "assistant" else 0,
        tool_calls=template_tool_calls(calls) if role == "assistant" and calls is not None else None,
        tool_call_id=message.get("tool_call_id") if role == "tool" else None,
        name=message.get("name") if role != "tool" else None,
    )


def _chat_example(row: dict[str, Any]) -> Example:
    return Example([_chat_message(m) for m in row["messages"]], tools=tools_of(row.get("tools")))


def _sharegpt_example(row: dict[str, Any]) -> Example:
    return _chat_example(sharegpt.as_chat_row(row))


# -- prompt / completion ----------------------------------------------------------------------
def _prompt_completion_problems(row: dict[str, Any]) -> Problems:
    yield from _need_text(row, "prompt", allow_empty=True)
    yield from _need_text(row, "completion")


def _prompt_completion_example(row: dict[str, Any]) -> Example:
    return Example([Message("user", row["prompt"], 0), Message("assistant", row["completion"])])


# -- instruction (Alpaca) -----------------------------------------------------------------------
def _instruction_problems(row: dict[str, Any]) -> Problems:
    yield from _need_text(row, "instruction")
    if row.get("input") is not None and (problem := _text_problem(row["input"])) is not None:
        yield "input", problem
    yield from _need_text(row, "output")


def _instruction_example(row: dict[str, Any]) -> Example:
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return Example([Message("user", prompt, 0), Message("assistant", row["output"])])


# -- extractive QA (SQuAD style) ----------------------------------------------------------------
def _qa_problems(row: dict[str, Any]) -> Problems:
    yield from _need_text(row, "context")
    yield from _need_text(row, "question")
    answers = row.get("answers")
    if not isinstance(answers, dict):
        yield "answers", 'must be an object {"text": [...], "answer_start": [...]}'
        return
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not all(_is_text(t) for t in texts):
        yield "answers.text", "must be a list of strings"
        return
    for i, text in enumerate(texts):
        if (problem := _text_problem(text)) is not None:
            yield f"answers.text[{i}]", problem
    if not isinstance(starts, list) or len(starts) != len(texts):
        yield "answers.answer_start", "must be a list of offsets, one per answer text"
        return
    context = row["context"] if _is_text(row.get("context")) else ""
    for i, (text, start) in enumerate(zip(texts, starts, strict=True)):
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            yield f"answers.answer_start[{i}]", "must be a non-negative integer"
        elif context[start : start + len(text)] != text:
            found = context[start : start + len(text)]
            yield (
                f"answers.answer_start[{i}]",
                f"does not point at the answer text: the context has {_shown(found)} there, not {_shown(text)}",
            )


def _qa_example(row: dict[str, Any]) -> Example:
    texts = row["answers"]["text"]
    prompt = f"{row['context']}\n\nQuestion: {row['question']}"
    return Example([Message("user", prompt, 0), Message("assistant", texts[0] if texts else UNANSWERABLE_REPLY)])


# -- raw text ------------------------------------------------------------------------------------
def _text_problems(row: dict[str, Any]) -> Problems:
    yield from _need_text(row, "text")


def _text_example(row: dict[str, Any]) -> Example:
    return Example(text=row["text"])


# -- preference pairs (core.preference_format, imported when used: it builds on this module) --
def _preference_problems(row: dict[str, Any]) -> Problems:
    from core.preference_format import problems

    return problems(row)


def _preference_example(row: dict[str, Any]) -> Example:
    """The prompt and its preferred reply, as a conversation (what a preview shows)."""
    from core.preference_format import to_pair

    pair = to_pair(row)
    return Example(
        [Message(m["role"], m["content"], 0) for m in pair.prompt]
        + [Message("assistant", m["content"]) for m in pair.chosen]
    )


@dataclass(frozen=True)
class Format:
    name: FormatName
    keys: tuple[str, ...]  # the columns that identify the format (and a CSV must have)
    problems: Callable[[dict[str, Any]], Problems]
    to_example: Callable[[dict[str, Any]], Example]
    json_columns: tuple[str, ...] = ()  # nested values that CSV cells carry as JSON
    optional: tuple[str, ...] = ()  # the other columns it reads
    other_keys: tuple[str, ...] = ()  # another set of columns that identifies the format
    # The format's own problems already name every key it does not read (its shapes
    # allow different keys), so `check` adds nothing.
    checks_own_keys: bool = False

    def identified_by(self, keys: Iterable[str]) -> bool:
        present = set(keys)
        return any(ks and set(ks) <= present for ks in (self.keys, self.other_keys))

    def check(self, row: dict[str, Any]) -> Problems:
        """Every problem of a row: its task's, the format's own, then each column the
        format does not read (it would not be trained on)."""
        if (problem := task_problem(row.get(TASK_KEY))) is not None:
            yield TASK_KEY, problem
        if TASK_KEY in row:  # every format takes it: the format's own rules never see it
            row = {key: value for key, value in row.items() if key != TASK_KEY}
        yield from self.problems(row)
        if self.checks_own_keys:
            return
        for key in unknown_keys(row, (*self.keys, *self.optional)):
            if key is None:  # csv.DictReader's key for the cells past the header's columns
                yield None, "this record has more cells than the header has columns"
            else:
                read = ", ".join((*self.keys, *self.optional))
                yield str(key), f"is not a field of format {self.name} ({read}); it would not be trained on"

    def example(self, row: dict[str, Any]) -> Example:
        """A valid row as what training consumes, with its task."""
        example = self.to_example(row)
        example.task = row.get(TASK_KEY)
        return example


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "chat",
            ("messages",),
            _chat_problems,
            _chat_example,
            ("messages", "parallel_tool_calls"),
            ("tools", "parallel_tool_calls"),
        ),
        Format(
            "sharegpt",
            ("conversations",),
            sharegpt.problems,
            _sharegpt_example,
            ("conversations",),
            ("system", "tools"),
        ),
        Format("prompt_completion", ("prompt", "completion"), _prompt_completion_problems, _prompt_completion_example),
        Format(
            "instruction", ("instruction", "output"), _instruction_problems, _instruction_example, optional=("input",)
        ),
        Format("qa", ("context", "question", "answers"), _qa_problems, _qa_example, ("answers",)),
        Format("text", ("text",), _text_problems, _text_example),
        Format(
            "preference",
            ("input", "preferred_output", "non_preferred_output"),
            _preference_problems,
            _preference_example,
            ("input", "preferred_output", "non_preferred_output", "tools"),
            other_keys=("prompt", "chosen", "rejected"),
            checks_own_keys=True,
        ),
    )
}


def detect(row: dict[str, Any]) -> Format | None:
    """The format whose identifying keys the row has (the most specific first)."""
    for name in ("chat", "sharegpt", "qa", "instruction", "preference", "prompt_completion", "text"):
        if REGISTRY[name].identified_by(row):
            return REGISTRY[name]
    return None


class UnreadableCell(UnreadableJson):
    def __init__(self, column: str, reason: UnreadableJson) -> None:
        super().__init__(str(reason))
        self.column = column


def decode_json_cells(fmt: Format, row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are strings: nested columns (messages, answers) arrive as JSON text,
    and an empty cell of one, or of the task column, is an absent value. Raises
    UnreadableCell, naming the column, for a cell that is not JSON."""
    if row.get(TASK_KEY) == "":
        row[TASK_KEY] = None
    for column in fmt.json_columns:
        if row.get(column) == "":
            row[column] = None
        elif isinstance(row.get(column), str):
            try:
                row[column] = parse_json(row[column])
            except UnreadableJson as exc:
                raise UnreadableCell(column, exc) from exc
    return row


def as_format_name(value: str | None) -> FormatName | None:
    """`value` as a format's name, if it is one (database columns hold plain strings)."""
    return next((name for name in FORMATS if name == value), None)


def describe_keys() -> str:
    return "; ".join(
        f"{f.name}: {', '.join(f.keys)}" + (f" (or {', '.join(f.other_keys)})" if f.other_keys else "")
        for f in REGISTRY.values()
    )
