"""Streaming multipart upload: the `file` part goes straight into storage while its
size and sha256 are computed, so no upload is ever held in memory, and the size limit
is enforced as bytes arrive (not after the whole body has been received).

Storage is written from worker threads, a batch of the body at a time: an object
store's writer sends a part over the network when one is full, which must not hold up
the event loop (and every other request with it)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, TypeVar

import anyio
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from core.errors import InvalidRequest, ServiceError
from core.storage import ObjectStore, ObjectWriter, StoredObject

if TYPE_CHECKING:  # python-multipart defines its callback types for type checkers only
    from python_multipart.multipart import MultipartCallbacks

T = TypeVar("T")
MAX_FIELD_BYTES = 4096  # for the small text fields beside the file (purpose)
# The body goes to storage in batches of this much: a thread hop per batch.
BATCH_BYTES = 1 << 20


@asynccontextmanager
async def in_threads(context: AbstractContextManager[T]) -> AsyncIterator[T]:
    """`context` entered and exited in worker threads. Its exit (publishing the object,
    or removing it) runs even if the request is cancelled meanwhile."""
    value = await run_in_threadpool(context.__enter__)
    try:
        yield value
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            suppressed = await run_in_threadpool(context.__exit__, type(exc), exc, exc.__traceback__)
        if not suppressed:
            raise
    else:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(context.__exit__, None, None, None)


@dataclass
class Upload:
    stored: StoredObject
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(raw: str) -> str:
    """Keep only the last path component, without control characters."""
    name = PureWindowsPath(PurePosixPath(raw).name).name
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).strip()
    return name[:255] or "upload"


class _PartCollector:
    """python-multipart callbacks: the `file` part to the writer, others to `fields`."""

    def __init__(self, out: ObjectWriter, max_bytes: int, too_large: ServiceError) -> None:
        self.out, self.max_bytes, self.too_large = out, max_bytes, too_large
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._name: str | None = None
        self._buffer = bytearray()
        self._is_file = False
        self.complete = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._buffer, self._is_file = {}, bytearray(), False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.filename is not None:
                raise InvalidRequest("Send exactly one 'file' part", param="file")
            self._is_file = True
            self.filename = safe_filename(options.get(b"filename", b"upload").decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.out.write(data[start:end])
            if self.out.bytes > self.max_bytes:
                raise self.too_large
        else:
            self._buffer += data[start:end]
            if len(self._buffer) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field {self._name!r} is too long", param=self._name)

    def _end(self) -> None:
        self.complete = True  # the closing boundary arrived

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._buffer.decode("utf-8", "replace")


async def receive_upload(
    request: Request, storage: ObjectStore, key: str, max_bytes: int, too_large: ServiceError
) -> Upload:
    """Stream the form's `file` part into storage; `too_large` is raised as soon as more
    than `max_bytes` have arrived (or are announced)."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "Expected a multipart/form-data body with a 'file' part and a 'purpose' field "
            "(curl -F file=@data.jsonl -F purpose=fine-tune)",
            param="file",
            code="invalid_content_type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise too_large
    async with in_threads(storage.writer(key)) as out:
        collector = _PartCollector(out, max_bytes, too_large)
        try:
            parser = MultipartParser(boundary, collector.callbacks())
            batch = bytearray()
            async for chunk in request.stream():
                batch += chunk
                if len(batch) >= BATCH_BYTES:
                    await run_in_threadpool(parser.write, bytes(batch))
                    batch.clear()
            await run_in_threadpool(parser.write, bytes(batch))
        except FormParserError as exc:  # a body (or boundary) that is not multipart/form-data
            raise InvalidRequest(
                f"The multipart body is malformed: {exc}", param="file", code="invalid_multipart"
            ) from exc
        parser.finalize()
        if collector.filename is None:
            raise InvalidRequest("The form has no 'file' part", param="file", code="missing_file")
        if not collector.complete:  # cut off: what arrived may end mid-line, nothing is kept
            raise InvalidRequest(
                "The upload ended before the multipart body's closing boundary; send the whole file again",
                param="file",
                code="incomplete_upload",
            )
    return Upload(StoredObject(key, out.bytes, out.sha256), collector.filename, collector.fields)
