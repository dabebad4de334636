"""JSON values as datasets hold them: parsed with limits that keep every later reader
safe, checked as training text, and quoted briefly in problems."""

from __future__ import annotations

import json
import reprlib
import sys
from collections.abc import Iterator
from typing import Any

# A problem found in a row: the field it is in (None: the row as a whole) and why.
Problems = Iterator[tuple[str | None, str]]
# Far deeper than any format needs (3 levels), and far from the interpreter's recursion
# limit, so a row that passes validation also parses wherever training reads it again.
MAX_NESTING = 64


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = 3, 80, 80, 6, 6
    return short


# A value quoted in a problem: short, and never recursing through a deeply nested one.
shown = _short_repr().repr


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


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def text_problem(value: Any) -> str | None:
    """Why `value` cannot be training text: not a string, or not valid Unicode (a lone
    surrogate such as a JSON "\\ud800" escape, which no tokenizer can encode)."""
    if not is_text(value):
        return f"must be a string, not {type(value).__name__}"
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start}"
    return None
