"""Artifact storage on an S3-compatible object store (AWS S3, MinIO, Cloudflare R2, GCS's
S3 API), through boto3, which reads the credentials, endpoint and region from its usual
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, a
profile, an instance role).

- Writes stream in bounded memory: the object goes out in parts (a multipart upload) as
  it is written, one part held at a time; it is published by CompleteMultipartUpload (or
  one PutObject for an object smaller than a part) only when the writer's block exits
  without error, so readers never see a partial object. On failure the upload is aborted.
- Reads stream: one GET from the current position, read as far as the reader reads; a
  seek (Parquet reads its footer first) starts another ranged GET. Every GET names the
  ETag the object had when it was opened (If-Match), so a reader never mixes two versions.
- Temporaries are the incomplete multipart uploads of dead writers: the maintenance loop
  aborts those whose newest part (or start) is older than the grace.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError

from core.storage import CHUNK, ObjectWriter

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, MultipartUploadTypeDef, ObjectIdentifierTypeDef
    from typing_extensions import Buffer

# Parts of 16 MiB (S3 wants at least 5 MiB but the last): a writer holds one part. S3
# allows 10,000 parts, so every 2,000 parts the part size doubles: 31 GiB in 16 MiB parts,
# then larger ones, up to about 1 TiB.
PART_BYTES = 16 << 20
PARTS_PER_SIZE = 2000


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchUpload")


class _MultipartSink:
    """The sink of an ObjectWriter: fills a part, sends it, starts the next. The upload
    itself begins with the first full part."""

    def __init__(self, client: S3Client, bucket: str, key: str, part_bytes: int) -> None:
        self._client, self._bucket, self._key, self._part_bytes = client, bucket, key, part_bytes
        self._part = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    def _part_size(self) -> int:
        return self._part_bytes << (len(self._parts) // PARTS_PER_SIZE)

    def write(self, chunk: memoryview, /) -> int:
        view = chunk.cast("B")
        while view.nbytes:
            room = self._part_size() - self._part.tell()
            self._part.write(view[:room])
            view = view[room:]
            if self._part.tell() == self._part_size():
                self._send_part()
        return chunk.nbytes

    def flush(self) -> None:
        pass  # parts go out when full; the last one when the object is published

    def _send_part(self) -> None:
        if self._upload_id is None:
            started = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = started["UploadId"]
        number = len(self._parts) + 1
        self._part.seek(0)
        sent = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=self._part
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})
        self._part = io.BytesIO()

    def publish(self) -> None:
        if self._upload_id is None:  # smaller than a part: one request, atomic as well
            self._part.seek(0)
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._part)
            return
        if self._part.tell():
            self._send_part()
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    def abort(self) -> None:
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        except ClientError as exc:
            if not _missing(exc):  # else aborted already (taken for a dead writer's)
                raise


class _ObjectReader(io.RawIOBase):
    """A seekable read-only stream of one version of an object."""

    def __init__(self, client: S3Client, bucket: str, key: str, size: int, etag: str) -> None:
        super().__init__()
        self._client, self._bucket, self._key, self._size, self._etag = client, bucket, key, size, etag
        self._position = 0
        self._body: Any = None  # the open GET, from _position on

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        if base + offset != self._position:
            self._drop_body()
            self._position = base + offset
        return self._position

    def readinto(self, buffer: Buffer, /) -> int:
        target = memoryview(buffer).cast("B")
        if self._position >= self._size or not target.nbytes:
            return 0
        if self._body is None:
            self._body = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-", IfMatch=self._etag
            )["Body"]
        data = self._body.read(target.nbytes)
        if not data:
            raise OSError(f"{self._key}: the object ended at {self._position} of {self._size} bytes")
        target[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


@dataclass(frozen=True)  # equal by bucket and prefix: a DataFile is a cache key (core.job_preflight)
class S3Storage:
    bucket: str
    prefix: str = ""
    part_bytes: int = PART_BYTES
    _client: S3Client = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", self.prefix.strip("/"))
        # A session of its own: boto3's default session is not thread-safe to create.
        object.__setattr__(self, "_client", boto3.session.Session().client("s3"))

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (datasets fingerprints what its generators read): boto3 clients are not.
        return (S3Storage, (self.bucket, self.prefix, self.part_bytes))

    def object_key(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def writer(self, key: str) -> Iterator[ObjectWriter]:
        sink = _MultipartSink(self._client, self.bucket, self.object_key(key), self.part_bytes)
        try:
            writer = ObjectWriter(sink)
            yield writer
            sink.publish()
        except BaseException:
            sink.abort()
            raise

    def open(self, key: str) -> BinaryIO:
        name = self.object_key(key)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"no stored object {key!r}") from None
            raise
        reader = _ObjectReader(self._client, self.bucket, name, head["ContentLength"], head["ETag"])
        return io.BufferedReader(reader, CHUNK)

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self._client.get_object(Bucket=self.bucket, Key=self.object_key(key))["Body"]
        with body:
            yield from body.iter_chunks(CHUNK)

    def delete(self, key: str) -> None:
        name = self.object_key(key)
        self._client.delete_object(Bucket=self.bucket, Key=name)
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{name}/"):
            objects: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                answer = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
                if errors := answer.get("Errors"):
                    raise OSError(f"could not delete {len(errors)} objects under {key!r}: {errors[0]}")

    def check(self) -> None:
        """Raises unless the bucket answers with our credentials (GET /readyz): a HEAD,
        which needs no object and writes nothing."""
        self._client.head_bucket(Bucket=self.bucket)

    def remove_stale_temporaries(self, grace_seconds: float) -> int:
        """Abort the multipart uploads under the prefix that nobody has sent a part to
        for `grace_seconds` (their writer died). A live writer sends a part with every
        PART_BYTES it is given."""
        cutoff, removed = datetime.now(UTC) - timedelta(seconds=grace_seconds), 0
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
        )
        for upload in (upload for page in pages for upload in page.get("Uploads", [])):
            if upload["Initiated"] >= cutoff or self._touched_since(upload, cutoff):
                continue
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except ClientError as exc:
                if not _missing(exc):  # else completed or aborted by its writer meanwhile
                    raise
                continue
            removed += 1
        return removed

    def _touched_since(self, upload: MultipartUploadTypeDef, cutoff: datetime) -> bool:
        pages = self._client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        try:
            return any(part["LastModified"] >= cutoff for page in pages for part in page.get("Parts", []))
        except ClientError as exc:
            if _missing(exc):  # completed or aborted meanwhile: nothing to remove
                return True
            raise


@lru_cache
def s3_storage(url: str) -> S3Storage:
    """The store of `s3://bucket/prefix` (one client per process: boto3 clients are
    thread-safe and slow to make)."""
    parts = urlsplit(url)
    return S3Storage(parts.netloc, parts.path)
