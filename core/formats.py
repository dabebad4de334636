"""Dataset formats: how each is recognised, what makes a row valid, and how a row
becomes the one shape training uses (a conversation, or raw text).

- chat: {"messages": [{"role", "content", "weight"?}, ...]}
- prompt_completion: {"prompt", "completion"}
- instruction (Alpaca): {"instruction", "input"?, "output"}
- qa (extractive, SQuAD style): {"context", "question", "answers": {"text": [...], "answer_start": [...]}}
- text: {"text"} for continued pre-training (every token is trained)
- preference: a prompt with a preferred and a rejected reply (DPO; core.preference_format)
"""

from __future__ import annotations

import json
import reprlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

FormatName = Literal["chat", "prompt_completion", "instruction", "qa", "text", "preference"]
FORMATS: tuple[FormatName, ...] = ("chat", "prompt_completion", "instruction", "qa", "text", "preference")
ROLES = ("system", "user", "assistant")
# The assistant's reply to a QA example whose answer list is empty (SQuAD 2 style).
UNANSWERABLE_REPLY = "The context does not contain the answer."

Problems = Iterator[tuple[str | None, str]]
# Far deeper than any format needs (3 levels), and far from the interpreter's recursion
# limit, so a row that passes validation also parses wherever training reads it again.
MAX_NESTING = 64


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = 3, 80, 80, 6, 6
    return short


# A value quoted in a problem: short, and never recursing through a deeply nested one.
_shown = _short_repr().repr


class UnreadableJson(ValueError):
    """JSON that does not give a usable value; the message says why."""


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects in `value` nest more than `limit` levels (walked
    without recursion, so any depth can be asked about)."""
    containers: list[tuple[Any, int]] = [(value, 1)]
    while containers:
        item, depth = containers.pop()
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                containers.append((child, depth + 1))
    return False


def parse_json(text: str) -> Any:
    """One JSON value, refusing what the standard library cannot turn into one (nesting
    past the recursion limit, integers past the int-to-string digit limit) and what
    is nested deeper than MAX_NESTING, with a message that says which."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"column {exc.colno}" if exc.lineno == 1 else f"line {exc.lineno} column {exc.colno}"
        raise UnreadableJson(f"invalid JSON: {exc.msg} at {where}") from exc
    except RecursionError as exc:
        raise UnreadableJson(f"invalid JSON: nested deeper than {MAX_NESTING} levels") from exc
    except ValueError as exc:  # json.loads raises it for nothing else (see sys.get_int_max_str_digits)
        raise UnreadableJson(f"invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits") from exc
    # Only a text with more opening brackets than MAX_NESTING can nest deeper: most rows
    # are not walked at all.
    if text.count("[") + text.count("{") > MAX_NESTING and nested_deeper_than(value, MAX_NESTING):
        raise UnreadableJson(f"invalid JSON: nested deeper than {MAX_NESTING} levels")
    return value


@dataclass
class Message:
    role: str
    content: str
    # Assistant turns only: 1 = trained on, 0 = context only.
    weight: int = 1


@dataclass
class Example:
    """What training consumes: a conversation, or (format text) raw text."""

    messages: list[Message] = field(default_factory=list)
    text: str | None = None


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _text_problem(value: Any) -> str | None:
    """Why `value` cannot be training text: not a string, or not valid Unicode (a lone
    surrogate such as a JSON "\\ud800" escape, which no tokenizer can encode)."""
    if not _is_text(value):
        return f"must be a string, not {type(value).__name__}"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start}"
    return None


def _need_text(row: dict[str, Any], key: str, *, allow_empty: bool = False) -> Problems:
    if key not in row or row[key] is None:
        yield key, "missing"
    elif (problem := _text_problem(row[key])) is not None:
        yield key, problem
    elif not allow_empty and not row[key].strip():
        yield key, "must not be empty"


# -- chat ------------------------------------------------------------------------------------
def _chat_problems(row: dict[str, Any]) -> Problems:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        yield "messages", "must be a non-empty list of {role, content} objects"
        return
    trained = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            yield where, "must be an object with role and content"
            continue
        role = message.get("role")
        if role not in ROLES:
            yield f"{where}.role", f"unknown role {_shown(role)}; expected one of {', '.join(ROLES)}"
        if (problem := _text_problem(message.get("content"))) is not None:
            yield f"{where}.content", problem
        weight = message.get("weight", 1)
        if "weight" in message and role != "assistant":
            yield f"{where}.weight", "only assistant messages take a weight"
        elif weight not in (0, 1) or isinstance(weight, bool):
            yield f"{where}.weight", "must be 0 or 1"
        trained += role == "assistant" and weight == 1
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        yield "messages", "needs at least one assistant message to train on"
    elif not trained:
        yield "messages", "every assistant message has weight 0: nothing to train on"


def _chat_example(row: dict[str, Any]) -> Example:
    return Example(
        [
            Message(m["role"], m["content"], int(m.get("weight", 1)) if m["role"] == "assistant" else 0)
            for m in row["messages"]
        ]
    )


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
    other_keys: tuple[str, ...] = ()  # another set of columns that identifies the format

    def identified_by(self, keys: Iterable[str]) -> bool:
        present = set(keys)
        return any(ks and set(ks) <= present for ks in (self.keys, self.other_keys))


REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Format("chat", ("messages",), _chat_problems, _chat_example, ("messages",)),
        Format("prompt_completion", ("prompt", "completion"), _prompt_completion_problems, _prompt_completion_example),
        Format("instruction", ("instruction", "output"), _instruction_problems, _instruction_example),
        Format("qa", ("context", "question", "answers"), _qa_problems, _qa_example, ("answers",)),
        Format("text", ("text",), _text_problems, _text_example),
        Format(
            "preference",
            ("input", "preferred_output", "non_preferred_output"),
            _preference_problems,
            _preference_example,
            ("input", "preferred_output", "non_preferred_output", "tools"),
            other_keys=("prompt", "chosen", "rejected"),
        ),
    )
}


def detect(row: dict[str, Any]) -> Format | None:
    """The format whose identifying keys the row has (the most specific first)."""
    for name in ("chat", "qa", "instruction", "preference", "prompt_completion", "text"):
        if REGISTRY[name].identified_by(row):
            return REGISTRY[name]
    return None


class UnreadableCell(UnreadableJson):
    def __init__(self, column: str, reason: UnreadableJson) -> None:
        super().__init__(str(reason))
        self.column = column


def decode_json_cells(fmt: Format, row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are strings: nested columns (messages, answers) arrive as JSON text.
    Raises UnreadableCell, naming the column, for a cell that is not JSON."""
    for column in fmt.json_columns:
        if isinstance(row.get(column), str):
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
