"""The storage contract, run against both stores: the local directory and an S3 bucket on
moto's standalone server (a real HTTP server speaking the S3 protocol, driven through
boto3 as a real store would be).

What moto covers, and these tests rely on: the S3 API's requests and errors as boto3
sends and parses them (multipart uploads, with the 5 MiB minimum size of every part but
the last enforced at completion; ranged and conditional GETs; paginated listings; batch
deletes). What it does not: real consistency, latency and throughput (it is one
in-memory process), the per-bucket request rate limits and throttling (503 SlowDown)
real stores answer, authentication and IAM policies (any credentials pass), the
timestamps of multipart uploads (moto reports every upload as initiated in 2010, so
clean-up is decided by its parts' times alone here), and the quirks of other
S3-compatible stores (MinIO, R2, GCS: e.g. which checksum headers they accept).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import secrets
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.s3_storage import S3Storage
from core.storage import LocalStorage, ObjectStore
from tests.conftest import S3Server

MiB = 1 << 20
# S3's smallest part but the last: the smallest store that still uploads in parts.
PART = 5 * MiB


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        yield S3Storage(server.bucket, f"contract-{secrets.token_hex(4)}", part_bytes=PART)


def put(store: ObjectStore, key: str, content: bytes) -> None:
    with store.writer(key) as out:
        out.write(content)


def read(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def test_an_object_reads_back_whole_streamed_and_from_any_position(store: ObjectStore) -> None:
    content = os.urandom(2 * PART + 12345)  # three parts on S3
    with store.writer("files/big") as out:
        for start in range(0, len(content), MiB):
            out.write(content[start : start + MiB])
    assert (out.bytes, out.sha256) == (len(content), hashlib.sha256(content).hexdigest())
    assert read(store, "files/big") == content
    assert b"".join(store.iter_chunks("files/big")) == content
    with store.open("files/big") as stream:  # as Parquet reads: the footer first, then back
        assert stream.seek(-100, os.SEEK_END) == len(content) - 100
        assert stream.read() == content[-100:]
        stream.seek(PART - 10)
        assert stream.read(20) == content[PART - 10 : PART + 10]
        assert stream.tell() == PART + 10
    put(store, "files/empty", b"")
    assert read(store, "files/empty") == b""


def test_no_reader_sees_an_object_before_its_writer_is_done(store: ObjectStore) -> None:
    with store.writer("files/growing") as out:
        out.write(os.urandom(PART + 1))  # on S3, a part is uploaded already
        with pytest.raises(FileNotFoundError):
            store.open("files/growing")
    assert len(read(store, "files/growing")) == PART + 1


def test_a_failed_write_leaves_nothing(store: ObjectStore) -> None:
    put(store, "files/kept", b"the first version")
    with pytest.raises(RuntimeError), store.writer("files/kept") as out:
        out.write(os.urandom(2 * PART))
        raise RuntimeError("the upload broke off")
    assert read(store, "files/kept") == b"the first version"  # not replaced
    with pytest.raises(RuntimeError), store.writer("files/new") as out:
        out.write(os.urandom(PART))
        raise RuntimeError("the upload broke off")
    with pytest.raises(FileNotFoundError):
        store.open("files/new")
    assert store.remove_stale_temporaries(0) == 0  # no temporary (no multipart upload) left over


def test_a_reader_never_mixes_two_versions(store: ObjectStore) -> None:
    first, second = b"a" * 1000, b"b" * 1000
    put(store, "files/replaced", first)
    with store.open("files/replaced") as stream:
        assert stream.read(10) == first[:10]
        put(store, "files/replaced", second)
        try:
            stream.seek(500)  # S3: a new GET, which must name the version opened
            rest = stream.read()
        except OSError:
            rest = None  # refused: S3's If-Match
        assert rest in (None, first[500:])  # the local file: the version it opened
    assert read(store, "files/replaced") == second


def test_delete_takes_a_key_and_everything_under_it(store: ObjectStore) -> None:
    for key in ("jobs/j1/a", "jobs/j1/b/c", "jobs/j10/a", "jobs/j2"):
        put(store, key, key.encode())
    store.delete("jobs/j1")
    store.delete("jobs/j2")
    store.delete("jobs/never-there")
    for gone in ("jobs/j1/a", "jobs/j1/b/c", "jobs/j2"):
        with pytest.raises(FileNotFoundError):
            store.open(gone)
    assert read(store, "jobs/j10/a") == b"jobs/j10/a"  # same name's start, another folder


@pytest.mark.parametrize("key", ["../outside", "files/../../outside", "/etc/passwd"])
def test_keys_cannot_leave_the_store(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        store.writer(key).__enter__()
    with pytest.raises(ValueError, match="escapes"):
        store.open(key)


def test_a_dead_writers_temporary_is_removed_after_the_grace(store: ObjectStore) -> None:
    abandoned = store.writer("files/abandoned")
    out = abandoned.__enter__()  # its process dies here: the block never exits
    out.write(os.urandom(PART + 1))
    assert store.remove_stale_temporaries(3600) == 0  # written to just now: alive
    time.sleep(1.1)  # S3 part times have whole seconds
    assert store.remove_stale_temporaries(0) == 1
    assert store.remove_stale_temporaries(0) == 0
    with pytest.raises(FileNotFoundError):
        store.open("files/abandoned")


def test_writing_and_reading_hold_a_part_at_most(store: ObjectStore) -> None:
    chunk, chunks = os.urandom(MiB), 8 * PART // MiB
    tracemalloc.start()
    try:
        with store.writer("files/large") as out:
            for _ in range(chunks):
                out.write(chunk)
        written = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        with store.open("files/large") as stream:
            while block := stream.read(MiB):
                digest.update(block)
        read_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(chunk * chunks).hexdigest()
    # 40 MiB went through. Held: writing, a part (5 MiB) and the chunks being written;
    # reading, the read buffer, the block returned and the HTTP client's own buffers.
    print(f"peak traced memory: writing {written / MiB:.1f} MiB, reading {read_peak / MiB:.1f} MiB")
    assert written < 3 * PART, f"writing held {written / MiB:.1f} MiB"
    assert read_peak < 8 * MiB, f"reading held {read_peak / MiB:.1f} MiB"


def test_parts_grow_so_that_large_objects_fit_in_s3s_10000(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.s3_storage

    monkeypatch.setattr(core.s3_storage, "PARTS_PER_SIZE", 1)  # double after every part, not every 2,000
    store = S3Storage(s3_server.bucket, f"contract-{secrets.token_hex(4)}", part_bytes=PART)
    content = os.urandom(3 * PART + 7)
    put(store, "files/grown", content)  # parts of 5 and 10 MiB, then the rest: 3 parts, not 4
    assert read(store, "files/grown") == content
    head = store._client.head_object(Bucket=store.bucket, Key=store.object_key("files/grown"))
    assert head["ETag"].strip('"').endswith("-3")


def test_stores_are_equal_by_where_they_keep_objects(tmp_path: Path, s3_server: S3Server) -> None:
    # A DataFile names its store and is a cache key (the pre-flight's token statistics);
    # datasets pickles it to fingerprint what it reads.
    assert LocalStorage(tmp_path) == LocalStorage(tmp_path) != LocalStorage(tmp_path / "other")
    store = S3Storage(s3_server.bucket, "/some/prefix/")
    assert store == S3Storage(s3_server.bucket, "some/prefix") != S3Storage(s3_server.bucket, "other")
    assert pickle.loads(pickle.dumps(store)) == store


def test_the_readiness_check_passes_on_a_reachable_bucket_only(s3_server: S3Server) -> None:
    from botocore.exceptions import ClientError

    S3Storage(s3_server.bucket, "ready").check()
    with pytest.raises(ClientError):
        S3Storage("no-such-bucket-here", "ready").check()


@pytest.mark.parametrize("url", ["http://bucket/prefix", "s3://", "s3://Not_A_Bucket", "s3://bucket//x", "/var/data"])
def test_a_storage_url_that_names_no_bucket_is_refused_at_start_up(url: str) -> None:
    from pydantic import ValidationError

    from core.settings import Settings

    with pytest.raises(ValidationError, match="FTSVC_STORAGE_URL must be s3://bucket"):
        Settings(storage_url=url)
    assert Settings(storage_url="s3://my-bucket/ftsvc/").storage_url == "s3://my-bucket/ftsvc"
