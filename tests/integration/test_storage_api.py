"""The API's uploads and downloads with the S3 store (FTSVC_STORAGE_URL=s3://...) on
moto's standalone server (what moto does not cover: tests/integration/test_storage.py):
uploads stream into the bucket in parts and are validated from it (Parquet by ranged
reads), downloads stream from it, deletion and refused uploads leave nothing behind."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator

import pytest

from core.s3_storage import PART_BYTES, S3Storage, s3_storage
from core.settings import get_settings
from tests.conftest import S3Server
from tests.helpers import EXAMPLES, assert_error, chat, jsonl, upload


@pytest.fixture
def bucket(client, s3_server: S3Server) -> Iterator[S3Storage]:  # type: ignore[no-untyped-def]
    """The API's storage, for the test: a fresh prefix of the test bucket."""
    settings = get_settings()
    settings.storage_url = s3_server.url(f"api-{secrets.token_hex(4)}")
    try:
        yield s3_storage(settings.storage_url)
    finally:
        settings.storage_url = ""


def object_keys(store: S3Storage) -> list[str]:
    listed = store._client.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.prefix}/")
    return [item["Key"].removeprefix(f"{store.prefix}/") for item in listed.get("Contents", [])]


def incomplete_uploads(store: S3Storage) -> list[str]:
    listed = store._client.list_multipart_uploads(Bucket=store.bucket, Prefix=f"{store.prefix}/")
    return [upload["Key"] for upload in listed.get("Uploads", [])]


def test_uploads_stream_into_the_bucket_and_download_from_it(client, bucket: S3Storage) -> None:  # type: ignore[no-untyped-def]
    # Larger than a part: the upload goes out in parts while it streams in.
    content = jsonl(*[chat(f"question {i} " + "x" * 150, "y" * 150) for i in range(PART_BYTES // 330 + 1000)])
    assert len(content) > PART_BYTES
    parquet = (EXAMPLES / "text.parquet").read_bytes()  # validated by ranged reads: the footer first
    ids = []
    for name, data in (("big.jsonl", content), ("text.parquet", parquet)):
        body = upload(client, data, name).json()
        assert body["status"] == "processed" and body["bytes"] == len(data), body
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert body["examples"] > 0
        assert client.get(f"/v1/files/{body['id']}/content").content == data
        ids.append(body["id"])
    assert sorted(object_keys(bucket)) == sorted(f"files/{file_id}" for file_id in ids)
    assert not any((get_settings().storage_root / "files" / file_id).exists() for file_id in ids)
    assert client.delete(f"/v1/files/{ids[0]}").status_code == 200
    assert object_keys(bucket) == [f"files/{ids[1]}"]


def test_refused_and_cut_off_uploads_leave_nothing_in_the_bucket(client, bucket: S3Storage) -> None:  # type: ignore[no-untyped-def]
    settings = get_settings()
    big = jsonl(*[chat("x" * 200, "y" * 200) for _ in range(PART_BYTES // 400 + 1000)])
    # Within what the declared length may exceed the limit by, so the body is read: it is
    # refused once a part has gone out, and the multipart upload is aborted.
    limit, settings.max_upload_bytes = settings.max_upload_bytes, len(big) - 1000
    try:
        assert_error(upload(client, big), 413, param="file", code="file_too_large")
    finally:
        settings.max_upload_bytes = limit
    cut = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n{"messages": ['
    )
    response = client.post("/v1/files", content=cut, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert_error(response, 400, param="file", code="incomplete_upload")
    assert object_keys(bucket) == [] and incomplete_uploads(bucket) == []
