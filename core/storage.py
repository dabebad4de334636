"""Artifact storage on a local directory. Objects are written under a temporary name
while their size and sha256 are computed, then published with an atomic rename, so a
reader never sees a partial object and a failed write leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from typing_extensions import Buffer

CHUNK = 1 << 20


@dataclass
class StoredObject:
    key: str
    bytes: int
    sha256: str


class ObjectWriter(io.RawIOBase):
    """A write-only binary stream (so gzip and tarfile can write into it) that knows the
    running size and digest of what it has written."""

    def __init__(self, handle: BinaryIO) -> None:
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


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"

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


def get_storage() -> LocalStorage:
    from core.settings import get_settings

    return LocalStorage(get_settings().storage_root)
