"""Validation errors in the client's terms (the API's request bodies and query
parameters, the standalone recipe's `--spec`): which field (as the client wrote it)
and what it must be, never pydantic's internals (union branch names such as
`constrained-int` or `literal['auto']`, discriminator functions, regular expressions).

pydantic reports one error per union branch that failed: `n_epochs: 100` fails both
`int <= 50` and `"auto"`. Those are one problem of one field, said once: "must be at
most 50 or 'auto' (got 100)"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.specs import ADAPTER_TYPES, SpecError

# What a value of this pydantic error type must be.
EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
BOUNDS = {
    "greater_than": "greater than {gt}",
    "greater_than_equal": "at least {ge}",
    "less_than": "less than {lt}",
    "less_than_equal": "at most {le}",
    "string_too_short": "at least {min_length} characters long",
    "string_too_long": "at most {max_length} characters long",
    "too_short": "a list of at least {min_length} item(s)",
    "too_long": "a list of at most {max_length} item(s)",
}
# The spec's patterns (core.specs), as a person reads them.
PATTERNS = {
    r"^[A-Za-z0-9_-]{1,64}$": "1 to 64 letters, digits, '_' or '-'",
    r"^[\w.]+$": "a module name (letters, digits, '_' and '.')",
}
# Where a request's values come from; only the body is nested.
SOURCES = ("query", "path", "header", "cookie")


@dataclass
class Problem:
    param: str | None
    message: str


def _param(loc: tuple[Any, ...], body: Any, missing: bool) -> str | None:
    """The field as the client wrote it. The location's parts that are not keys of the
    body as sent (union branches, a discriminated union's tag) are left out, but for the
    last part of a `missing` error, which names the field that is missing."""
    if loc and loc[0] in SOURCES:
        return str(loc[1]) if len(loc) > 1 else None
    text, value = "", body
    parts = loc[1:] if loc and loc[0] == "body" else loc
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            text, value = f"{text}[{part}]", value[part]
        elif isinstance(value, dict) and (part in value or (last and missing)):
            text, value = (f"{text}.{part}" if text else str(part)), value.get(part)
    return text or None


def _got(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str | int | float | bool) else ""
    return f" (got {shown})" if shown and len(shown) <= 80 else ""


def _expected(error: dict[str, Any]) -> str | None:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in EXPECTED:
        return EXPECTED[kind]
    if kind in ("literal_error", "enum"):
        return str(ctx["expected"])
    if kind in BOUNDS:
        return BOUNDS[kind].format(**ctx)
    if kind == "string_pattern_mismatch":
        return PATTERNS.get(ctx["pattern"], "text in the documented form")
    return None


def _tagged_union(error: dict[str, Any], param: str | None) -> Problem:
    """A discriminated union (the adapter): an unknown type, or not an object at all."""
    field = (param or "").rsplit(".", 1)[-1] or "object"
    if error["type"] == "union_tag_not_found":
        example = f', e.g. {{"type": "{ADAPTER_TYPES[0]}"}}' if field == "adapter" else ' with its "type"'
        return Problem(param, f"must be an object{example}")
    tag, tags = error["ctx"]["tag"], error["ctx"]["expected_tags"].replace("'", "")
    return Problem(f"{param}.type" if param else "type", f"unknown {field} type {tag!r}; one of: {tags}")


def _problem(param: str | None, errors: list[dict[str, Any]]) -> Problem:
    first = errors[0]
    kind = first["type"]
    if kind == "missing":
        return Problem(param, "required" if param else "The request body is required (a JSON object)")
    if kind == "extra_forbidden":
        tag = next((p for p in first["loc"] if p in ADAPTER_TYPES), None)
        return Problem(param, f"not a parameter of the {tag} adapter" if tag else "unknown field")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tagged_union(first, param)
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, SpecError):
        return Problem(error.param, str(error))
    expected = [e for e in (_expected(error) for error in errors) if e is not None]
    if len(expected) < len(errors):  # a rule of the spec (a model validator): its own words
        return Problem(param, str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, "))
    if param is None:
        return Problem(None, f"The request body must be {' or '.join(dict.fromkeys(expected))}")
    return Problem(param, f"must be {' or '.join(dict.fromkeys(expected))}{_got(first.get('input'))}")


def problems(errors: list[dict[str, Any]], body: Any) -> list[Problem]:
    """One problem per field, the most specific first: an error inside a value (an item
    of a list) before the errors of the union branches the value did not take."""
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for error in errors:
        param = _param(tuple(error["loc"]), body, error["type"] == "missing")
        grouped.setdefault(param, []).append(error)
    found = [_problem(param, group) for param, group in grouped.items()]
    head = found[0].param or ""
    deeper = [p for p in found if p.param and p.param.startswith(head) and len(p.param) > len(head)]
    return ([deeper[0]] + [p for p in found if p is not deeper[0]]) if head and deeper else found
