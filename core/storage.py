"""Artifact storage: uploads, checkpoints, adapters, result files and merged models, by
key (`files/file-...`, `checkpoints/ftjob-.../step-8-.../state.tar`). Two stores share
one interface (`ObjectStore`): a local directory (`LocalStorage`, the default) and an
S3-compatible object store (core.s3_storage, when FTSVC_STORAGE_URL names one). In both,
an object is published whole or not at all: a reader never sees a partial object, and a
failed write leaves nothing behind (beyond a temporary that the maintenance loop removes
once its writer is gone).

The local directory: objects are written under a temporary name while their size and
sha256 are computed, then published with an atomic rename."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from typing_extensions import Buffer

CHUNK = 1 << 20


@dataclass
class StoredObject:
    key: str
    bytes: int
    sha256: str


class Sink(Protocol):
    """Where an ObjectWriter's bytes go: a temporary file, or an upload's parts."""

    def write(self, chunk: memoryview, /) -> object: ...

    def flush(self) -> None: ...


class ObjectWriter(io.RawIOBase):
    """A write-only binary stream (so gzip and tarfile can write into it) that knows the
    running size and digest of what it has written."""

    def __init__(self, handle: Sink) -> None:
        super().__init__()
        self._handle = handle
        self._digest = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, chunk: Buffer, /) -> int:
        view = memoryview(chunk)
        self._handle.write(view)
        self._digest.update(view)
        self.bytes += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self._handle.flush()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class ObjectStore(Protocol):
    """What every store does (LocalStorage below, core.s3_storage.S3Storage), and all
    that the service asks of one: keys are relative paths (`files/file-...`)."""

    def writer(self, key: str) -> AbstractContextManager[ObjectWriter]:
        """Write an object; it is published only if the block exits without error."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A seekable stream of the object (FileNotFoundError if there is none)."""
        ...

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        """The object's bytes, streamed (a download's body)."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object `key` and every object under `key/` (a job's folder); no
        error if there is none."""
        ...

    def check(self) -> None:
        """Raise unless objects can be written here (GET /readyz)."""
        ...

    def remove_stale_temporaries(self, grace_seconds: float) -> int:
        """Remove objects still being written that nobody has written to for
        `grace_seconds`: their writer died (an API killed mid-upload). Returns how many."""
        ...


@dataclass(frozen=True)  # equal by root: a DataFile is a cache key (core.job_preflight)
class LocalStorage:
    root: Path

    @property
    def _tmp(self) -> Path:
        return self.root / ".tmp"

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if self.root.resolve() not in resolved.parents:
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return resolved

    @contextmanager
    def writer(self, key: str) -> Iterator[ObjectWriter]:
        """Write an object; it is published only if the block exits without error."""
        final = self.path(key)
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as handle:
                writer = ObjectWriter(handle)
                yield writer
                handle.flush()
                os.fsync(handle.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        with self.open(key) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def remove_stale_temporaries(self, grace_seconds: float) -> int:
        """Remove objects still being written that nobody has touched for `grace_seconds`:
        their writer died (an API killed mid-upload). A live writer touches its file with
        every chunk, so it is never mistaken for a dead one."""
        if not self._tmp.is_dir():
            return 0
        cutoff, removed = time.time() - grace_seconds, 0
        for path in self._tmp.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # published or removed by its writer meanwhile
                continue
        return removed

    def check(self) -> None:
        """Raises unless objects can be written here (GET /readyz): the directory for
        objects in progress exists, or can be made, and is writable (a read-only mount
        fails too)."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        if not os.access(self._tmp, os.W_OK):
            raise PermissionError(f"the storage directory {self._tmp} is not writable")

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def get_storage() -> ObjectStore:
    from core.settings import get_settings

    settings = get_settings()
    if settings.storage_url:
        from core.s3_storage import s3_storage  # boto3 only where a store needs it

        return s3_storage(settings.storage_url)
    return LocalStorage(settings.storage_root)
