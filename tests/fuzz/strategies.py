"""Hypothesis strategies for hostile training files: an example of every format that is
then damaged (a field dropped or replaced by a hostile value), written as JSONL, a JSON
array, CSV or Parquet, and possibly damaged again as bytes (truncated, re-encoded,
spliced with invalid UTF-8, NUL or a corrupt Parquet footer)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from core.formats import FORMATS
from core.json_values import nested_deeper_than
from tests.helpers import EXAMPLES

FILE_TYPES = ("jsonl", "json", "csv", "parquet")
EXTENSIONS = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "parquet": ".parquet"}

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
VALID_ROWS: dict[str, dict[str, Any]] = {
    "chat": CHAT,
    # A conversation with a function call, its result and tools as JSON text.
    "sharegpt": json.loads((EXAMPLES / "sharegpt.jsonl").read_text().splitlines()[2]),
    # Any format's example may name its task (core.tasks): damaged, dropped on some rows.
    "prompt_completion": {"prompt": "2+2=", "completion": "4", "task": "arithmetic"},
    "instruction": {"instruction": "Translate", "input": "cat", "output": "chat"},
    "qa": {
        "context": "Paris is in France.",
        "question": "Where?",
        "answers": {"text": ["France"], "answer_start": [12]},
    },
    "text": {"text": "Once upon a time"},
    "preference": {
        "input": {"messages": [{"role": "user", "content": "2+2="}]},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
        "task": "arithmetic",
    },
}


@dataclass
class Upload:
    content: bytes
    filename: str
    format_name: str  # "auto" or a format named at upload

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them readable
        head = self.content[:300]
        return f"Upload({self.filename!r}, format={self.format_name!r}, {len(self.content)} bytes: {head!r}...)"


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# Values that broke or could break a reader: deep nesting, numbers past every limit,
# strings that are not Unicode, control characters, sheer size, every JSON type.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\ufeff", "\r\n", "\u2028", "\U0001f680"]),
    st.integers(min_value=1, max_value=300_000).map(lambda n: "x" * n),
)
HOSTILE_VALUES = st.one_of(
    HOSTILE_TEXT,
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**5000), 2**63, -1, 0, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=1, max_value=3000).map(_nested),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=4),
    st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3),
)
# A client sends any name (without lone surrogates: those cannot be encoded to send).
FILENAME_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)
# Raw JSON text no encoder writes: literals past the float range, integers past the
# digit limit, lone surrogate escapes, deep nesting, truncation.
RAW_JSON = st.one_of(
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", '"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', "[", '{"a":']),
    st.integers(min_value=4000, max_value=60_000).map(lambda n: "9" * n),
    st.integers(min_value=60, max_value=200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=60, max_value=200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside a row where a value could be replaced."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


def _replace(row: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(row) if isinstance(row, dict) else list(row)
    copy[path[0]] = _replace(row[path[0]], path[1:], new)
    return copy


def _drop(row: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        copy = dict(row) if isinstance(row, dict) else list(row)
        del copy[path[0]]
        return copy
    return _replace(row, path[:1], _drop(row[path[0]], path[1:]))


@st.composite
def rows(draw: st.DrawFn, fmt: str) -> Any:
    """A valid row of `fmt`, or one damaged in one place, or no object at all."""
    row: Any = VALID_ROWS[fmt]
    action = draw(st.sampled_from(["keep", "keep", "replace", "replace", "drop", "other_format", "not_object"]))
    if action == "not_object":
        return draw(HOSTILE_VALUES)
    if action == "other_format":
        return VALID_ROWS[draw(st.sampled_from(FORMATS))]
    if action == "keep":
        return row
    path = draw(st.sampled_from(_paths(row)))
    return _replace(row, path, draw(HOSTILE_VALUES)) if action == "replace" else _drop(row, path)


def _json_line(row: Any, raw: str | None) -> str:
    try:
        text = json.dumps(row, ensure_ascii=False)
    except (ValueError, RecursionError):  # too deep or too long for the encoder itself
        text = "{}"
    return text if raw is None else text.replace("1", raw, 1) if "1" in text else raw


@st.composite
def jsonl(draw: st.DrawFn, data: list[Any]) -> bytes:
    newline = draw(st.sampled_from(["\n", "\r\n", "\n\n", "\r"]))
    lines = [_json_line(row, draw(st.none() | RAW_JSON)) for row in data]
    return newline.join(lines).encode("utf-8", "surrogatepass")


@st.composite
def json_array(draw: st.DrawFn, data: list[Any]) -> bytes:
    text = "[" + ", ".join(_json_line(row, draw(st.none() | RAW_JSON)) for row in data) + "]"
    return text.encode("utf-8", "surrogatepass")


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return _json_line(value, None)
    return "" if value is None else str(value) if not isinstance(value, int) or abs(value) < 10**100 else "1"


@st.composite
def csv_file(draw: st.DrawFn, data: list[Any], fmt: str) -> bytes:
    columns = list(VALID_ROWS[fmt]) + draw(st.lists(st.sampled_from(["extra", "", "messages", "te\x00xt"]), max_size=2))
    if draw(st.booleans()):
        columns = draw(st.permutations(columns))[: draw(st.integers(0, len(columns)))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\r\n", "\n"])))
    writer.writerow(columns)
    for row in data:
        cells = [_cell(row.get(c)) if isinstance(row, dict) else _cell(row) for c in columns]
        writer.writerow(cells + draw(st.lists(st.just("surplus"), max_size=1)))
    text = out.getvalue()
    if draw(st.booleans()):  # a cell's JSON replaced by raw JSON no encoder writes
        text = text.replace("hello", draw(RAW_JSON), 1)
    return text.encode("utf-8", "surrogatepass")


# Column types a dataset could arrive in, most of which no format expects.
ODD_COLUMNS: list[tuple[pa.DataType, list[Any]]] = [
    (pa.int64(), [1, None]),
    (pa.float64(), [float("nan"), float("inf")]),
    (pa.binary(), [b"\xff\xfe", b""]),
    (pa.timestamp("s"), [0, 253402300800 * 10]),  # the second is past year 9999
    (pa.date32(), [0, 2_000_000_000 // 86400 * 1000]),
    (pa.duration("ns"), [1, None]),
    (pa.decimal128(38, 10), [None, None]),
    (pa.list_(pa.list_(pa.int8())), [[[1]], None]),
    (pa.struct([("role", pa.string()), ("content", pa.int32())]), [{"role": "user", "content": 1}, None]),
    (pa.map_(pa.string(), pa.string()), [[("role", "user")], None]),
    (pa.dictionary(pa.int8(), pa.string()), ["a", "b"]),
    (pa.null(), [None, None]),
    (pa.large_string(), ["x", "y"]),
]


def _parquet_bytes(table: pa.Table, compression: str) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, compression=compression)
    return out.getvalue()


@st.composite
def parquet_file(draw: st.DrawFn, data: list[Any], fmt: str) -> bytes:
    # Arrow writes a schema nested thousands deep with gigabytes of memory (and readers
    # refuse more than 100 levels anyway): such rows stay JSON's.
    shallow = [r for r in data if isinstance(r, dict) and not nested_deeper_than(r, 150)]
    compression = draw(st.sampled_from(["none", "snappy", "zstd"]))
    try:
        table = pa.Table.from_pylist(shallow or [VALID_ROWS[fmt]])
        for _ in range(draw(st.integers(0, 2))):
            arrow_type, values = draw(st.sampled_from(ODD_COLUMNS))
            name = draw(st.sampled_from([*VALID_ROWS[fmt], "extra"]))
            column = pa.array((values * table.num_rows)[: table.num_rows], type=arrow_type)
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, column) if index >= 0 else table.append_column(name, column)
        return _parquet_bytes(table, compression)
    except (pa.ArrowException, OverflowError, ValueError, TypeError, RecursionError):
        # Rows Arrow cannot type or Parquet cannot hold (mixed types, an empty struct).
        return _parquet_bytes(pa.Table.from_pylist([VALID_ROWS[fmt]]), compression)


@st.composite
def damaged(draw: st.DrawFn, content: bytes, file_type: str) -> bytes:
    """The bytes as written, or damaged the way files are on their way to a server."""
    damage = draw(
        st.sampled_from(
            ["none", "none", "truncate", "splice", "flip", "latin-1", "utf-16", "utf-16-le", "utf-8-sig", "footer"]
        )
    )
    if damage == "truncate":
        return content[: draw(st.integers(0, max(len(content) - 1, 0)))]
    if damage in ("splice", "flip") and content:
        at = draw(st.integers(0, len(content) - 1))
        if damage == "flip":
            return content[:at] + bytes([content[at] ^ draw(st.integers(1, 255))]) + content[at + 1 :]
        junk = draw(
            st.sampled_from([b"\x00", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\r", b'"', b"\x1a"])
        )
        return content[:at] + junk + content[at:]
    if damage in ("latin-1", "utf-16", "utf-16-le", "utf-8-sig") and file_type != "parquet":
        text = content.decode("utf-8", "surrogatepass")
        return text.encode(damage, "surrogatepass") if damage != "latin-1" else text.encode(damage, "replace")
    if damage == "footer" and len(content) > 12:  # Parquet's footer: metadata, its length, PAR1
        at = len(content) - draw(st.integers(1, min(len(content), 200)))
        return content[:at] + draw(st.binary(min_size=1, max_size=8)) + content[at + 8 :]
    return content


@st.composite
def uploads(draw: st.DrawFn) -> Upload:
    fmt = draw(st.sampled_from(FORMATS))
    file_type = draw(st.sampled_from(FILE_TYPES))
    data = draw(st.lists(rows(fmt), min_size=0, max_size=4))
    if file_type == "jsonl":
        content = draw(jsonl(data))
    elif file_type == "json":
        content = draw(json_array(data))
    elif file_type == "csv":
        content = draw(csv_file(data, fmt))
    else:
        content = draw(parquet_file(data, fmt))
    content = draw(damaged(content, file_type))
    # The extension names the type, or another one, or none (the content decides).
    extension = draw(st.sampled_from([EXTENSIONS[file_type], EXTENSIONS[file_type], ".txt", "", ".json"]))
    stem = draw(st.sampled_from(["data", "../../etc/passwd", "C:\\x\\data", "a\x00b", ".", ""]) | FILENAME_TEXT)
    return Upload(content, f"{stem}{extension}", draw(st.sampled_from(["auto", "auto", *FORMATS])))


@dataclass
class RawMultipart:
    """A request body with its Content-Type, as a client could frame it by hand."""

    body: bytes
    content_type: str


HEADER_BYTES = st.sampled_from([b"", b"\xff\xfe", b'"', b"\x00", b";", b"=", b"\r\n", "é".encode(), b"x" * 5000])


@st.composite
def multipart_bodies(draw: st.DrawFn) -> RawMultipart:
    """Multipart framing gone wrong: odd boundaries, part headers with broken
    parameters (quotes, NUL, non-UTF-8 bytes, RFC 2231 names), duplicate or missing
    parts, oversized fields, a body cut short."""
    boundary = draw(st.sampled_from(["b", "x" * 69, "x" * 200, "a b", 'q"q', "é", ""]))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from([b"file", b"purpose", b"format", b"", b"fi\x00le"]) | HEADER_BYTES)
        disposition = b'form-data; name="' + name + b'"'
        if draw(st.booleans()):
            disposition += draw(
                st.sampled_from([b'; filename="a.jsonl"', b"; filename*=UTF-8''%FF%00.csv", b"; filename="])
            ) + draw(HEADER_BYTES)
        headers = b"Content-Disposition: " + disposition + b"\r\n"
        if draw(st.booleans()):
            headers += b"Content-Type: " + draw(HEADER_BYTES) + b"\r\n"
        value = draw(st.sampled_from([b"fine-tune", b"auto", b'{"text": "hi"}\n', b"x" * 5000, b"\xff\x00"]))
        parts.append(b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n" + value + b"\r\n")
    body = b"".join(parts) + draw(st.sampled_from([b"--" + boundary.encode() + b"--\r\n", b"", b"--"]))
    body = body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/mixed; boundary=b",
                "application/json",
            ]
        )
    )
    return RawMultipart(body, content_type)
