"""Dataset files: JSONL, JSON arrays, CSV and Parquet, read row by row and validated
against a format (core.formats), so every problem names its line (or row) and field.

JSONL, CSV and Parquet are streamed, so memory stays bounded whatever the file size; a
JSON array is parsed whole (the format offers no way to stream it with the standard
library), so large datasets belong in JSONL or Parquet.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

from core.formats import (
    REGISTRY,
    Example,
    Format,
    FormatName,
    UnreadableCell,
    decode_json_cells,
    describe_keys,
    detect,
)
from core.json_values import UnreadableJson, parse_json
from core.storage import LocalStorage, ObjectStore
from core.tasks import TASK_KEY, TaskTally

MAX_PROBLEMS = 100
FileType = Literal["jsonl", "json", "csv", "parquet"]
FILE_TYPES: tuple[FileType, ...] = ("jsonl", "json", "csv", "parquet")
_EXTENSIONS: dict[str, FileType] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
PARQUET_BATCH_ROWS = 1024
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# A problem's message quotes what the file holds (a CSV header, a reader's error): it is
# kept short, and stored (Postgres text holds neither NUL nor lone surrogates).
MAX_MESSAGE_CHARS = 500


@dataclass
class Problem:
    line: int | None  # line in the file (JSONL, CSV); None for Parquet and JSON arrays
    field: str | None
    message: str
    row: int | None = None  # 1-based example number in any file type

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else (f"row {self.row}" if self.row else "file")
        if self.field:
            where += f", field {self.field}"
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    n_examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False  # more problems existed than were kept
    format: str | None = None
    file_type: str | None = None
    tasks: TaskTally = field(default_factory=TaskTally)  # the valid examples' tasks

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            problem.message = _storable(problem.message)
            # A field may name a key of the file (one no format reads): any text at all.
            problem.field = _storable(problem.field) if problem.field is not None else None
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


def _storable(message: str) -> str:
    """`message` as text any database stores: NUL and lone surrogates escaped, cut short."""
    text = message.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


@dataclass(frozen=True)
class DataFile:
    """A validated dataset in storage: where its bytes are and how to read them."""

    store: ObjectStore
    key: str
    file_type: FileType
    format: FormatName

    @classmethod
    def local(cls, path: Path, file_type: FileType, data_format: FormatName) -> DataFile:
        """A file outside the service's storage (the recipe run on its own)."""
        return cls(LocalStorage(path.parent), path.name, file_type, data_format)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    def open(self) -> BinaryIO:
        return self.store.open(self.key)


@dataclass
class RawRow:
    line: int | None
    row: int
    data: Any = None
    problem: str | None = None
    field: str | None = None  # where in the row the problem is, if in one field


class FileLevelError(Exception):
    """The file as a whole cannot be read (not Parquet, not a JSON array, ...)."""


def as_file_type(value: str | None) -> FileType | None:
    """`value` as a file type, if it is one (database columns hold plain strings)."""
    return next((name for name in FILE_TYPES if name == value), None)


def detect_file_type(filename: str, head: bytes) -> FileType:
    name = filename.lower()
    for ext, file_type in _EXTENSIONS.items():
        if name.endswith(ext):
            return file_type
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"PAR1"):
        return "parquet"
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{") or name.endswith(".json"):
        return "jsonl"
    return "csv"


def _jsonl_rows(stream: BinaryIO) -> Iterator[RawRow]:
    row = 0
    for line_no, raw in enumerate(stream, start=1):
        if line_no == 1 and raw.startswith(UTF16_BOMS):  # else every line would be "not UTF-8"
            raise FileLevelError("the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8")
        if not raw.strip():
            continue
        row += 1
        try:
            yield RawRow(line_no, row, parse_json(raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            yield RawRow(line_no, row, problem=f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
        except UnreadableJson as exc:
            yield RawRow(line_no, row, problem=str(exc))


def _json_array_rows(stream: BinaryIO) -> Iterator[RawRow]:
    raw = stream.read()
    try:
        items = parse_json(raw.decode(json.detect_encoding(raw)))  # UTF-8, -16 or -32, as json.load reads
    except UnicodeDecodeError as exc:
        raise FileLevelError(
            f"not a valid JSON document: not UTF-8, UTF-16 or UTF-32 ({exc.reason} at byte {exc.start})"
        ) from exc
    except UnreadableJson as exc:
        raise FileLevelError(str(exc)) from exc
    if not isinstance(items, list):
        raise FileLevelError("a .json file must hold an array of examples (use JSONL for one example per line)")
    for row, item in enumerate(items, start=1):
        yield RawRow(None, row, item)


def _csv_rows(stream: BinaryIO, fmt: Format | None) -> Iterator[RawRow]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    try:
        header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FileLevelError(f"cannot read the CSV header: {exc}") from exc
    fmt = fmt or detect(dict.fromkeys(header))
    if fmt is None or not fmt.identified_by(header):
        wanted = f"format {fmt.name} needs {', '.join(fmt.keys)}" if fmt else f"known formats need: {describe_keys()}"
        raise FileLevelError(f"the CSV columns are {', '.join(header) or 'none'}; {wanted}")
    row = 0
    try:
        for record in reader:
            row += 1
            try:
                yield RawRow(reader.line_num, row, decode_json_cells(fmt, dict(record)))
            except UnreadableCell as exc:
                yield RawRow(reader.line_num, row, problem=str(exc), field=exc.column)
    except (UnicodeDecodeError, csv.Error) as exc:
        yield RawRow(reader.line_num, row + 1, problem=f"cannot read this CSV record: {exc}")


def _parquet_rows(stream: BinaryIO) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # What a damaged or hostile file raises from Arrow's reader, and from turning its
    # values into Python ones (a timestamp past year 9999, bytes that are not UTF-8).
    unreadable = (pa.ArrowException, OSError, ValueError, OverflowError)
    try:
        parquet = pq.ParquetFile(stream)
    except unreadable as exc:
        raise FileLevelError(f"not a Parquet file: {exc}") from exc
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for item in batch.to_pylist():
                row += 1
                yield RawRow(None, row, item)
    except unreadable as exc:
        yield RawRow(None, row + 1, problem=f"cannot read the Parquet data from this row on: {exc}")


def read_rows(stream: BinaryIO, file_type: FileType, fmt: Format | None = None) -> Iterator[RawRow]:
    if file_type == "jsonl":
        return _jsonl_rows(stream)
    if file_type == "json":
        return _json_array_rows(stream)
    if file_type == "csv":
        return _csv_rows(stream, fmt)
    return _parquet_rows(stream)


def validate(stream: BinaryIO, file_type: FileType, format_name: str = "auto") -> ValidationReport:
    """Check every row; the format is the one named, or the first row's."""
    report = ValidationReport(file_type=file_type)
    explicit = REGISTRY[format_name] if format_name != "auto" else None
    file_format, format_origin = explicit, "named at upload"
    try:
        for raw in read_rows(stream, file_type, explicit):
            where = (raw.line, raw.row)
            if raw.problem is not None:
                report.add(Problem(where[0], raw.field, raw.problem, where[1]))
                continue
            if not isinstance(raw.data, dict):
                report.add(Problem(where[0], None, "each example must be a JSON object", where[1]))
                continue
            row_format = detect(raw.data)
            if file_format is None:
                if row_format is None:
                    report.add(
                        Problem(
                            where[0], None, f"no known format; expected the keys of one of: {describe_keys()}", where[1]
                        )
                    )
                    continue
                file_format = row_format
                format_origin = f"detected from {'line' if raw.line else 'row'} {raw.line or raw.row}"
            elif explicit is None and row_format is not None and row_format is not file_format:
                report.add(
                    Problem(
                        where[0],
                        None,
                        f"this example is in format {row_format.name}, but the file "
                        f"is in format {file_format.name} ({format_origin})",
                        where[1],
                    )
                )
                continue
            task = raw.data.get(TASK_KEY)
            place = f"line {raw.line}" if raw.line is not None else f"row {raw.row}"
            problems = [*file_format.check(raw.data), *report.tasks.check(task, place)]
            for field_name, message in problems:
                report.add(Problem(where[0], field_name, message, where[1]))
            if not problems:
                report.n_examples += 1
                report.tasks.count(task)
    except FileLevelError as exc:
        report.add(Problem(None, None, str(exc)))
    report.format = file_format.name if file_format else None
    if report.n_examples == 0 and report.ok:
        report.add(Problem(None, None, "the file contains no examples"))
    return report


def iter_examples(stream: BinaryIO, file_type: FileType, format_name: str) -> Iterator[Example]:
    """The examples of a validated stream, in order."""
    fmt = REGISTRY[format_name]
    for raw in read_rows(stream, file_type, fmt):
        yield fmt.example(raw.data)


def examples_of(data: DataFile) -> Generator[Example]:
    """The examples of a validated file in storage, in order (training, statistics and
    previews all read them this way)."""
    with data.open() as stream:
        yield from iter_examples(stream, data.file_type, data.format)
