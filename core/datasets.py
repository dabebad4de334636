"""Training-file validation: streamed line by line, so memory stays bounded whatever
the file size, and every problem names its line and field."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

MAX_PROBLEMS = 100
ROLES = ("system", "user", "assistant")


@dataclass
class Problem:
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        if self.field:
            where += f", field {self.field}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    n_examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False  # more problems existed than were kept

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.truncated = True

    def problems_json(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.problems]

    def summary(self) -> str:
        if self.ok:
            return f"{self.n_examples} examples"
        more = " (and more)" if self.truncated else ""
        return f"{len(self.problems)} problem(s){more}; first: {self.problems[0]}"


def _chat_problems(example: Any) -> Iterable[tuple[str | None, str]]:
    if not isinstance(example, dict):
        yield None, "each line must be a JSON object"
        return
    messages = example.get("messages")
    if "messages" not in example:
        yield "messages", 'missing; each line needs a "messages" list'
        return
    if not isinstance(messages, list) or not messages:
        yield "messages", "must be a non-empty list of {role, content} objects"
        return
    has_assistant = False
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            yield where, "must be an object with role and content"
            continue
        role = message.get("role")
        if role not in ROLES:
            yield f"{where}.role", f"unknown role {role!r}; expected one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            yield f"{where}.content", "must be a string"
        has_assistant |= role == "assistant"
    if not has_assistant:
        yield "messages", "needs at least one assistant message to train on"


def validate_chat_jsonl(stream: BinaryIO) -> ValidationReport:
    """Validate a JSONL chat file: one {"messages": [...]} object per line."""
    report = ValidationReport()
    for line_no, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            example = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            report.add(Problem(line_no, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"))
            continue
        except json.JSONDecodeError as exc:
            report.add(Problem(line_no, None, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        problems = list(_chat_problems(example))
        for field_name, message in problems:
            report.add(Problem(line_no, field_name, message))
        if not problems:
            report.n_examples += 1
    if report.n_examples == 0 and report.ok:
        report.add(Problem(None, None, "the file contains no examples"))
    return report
