"""Directories to and from single stored objects (tar archives), written atomically
through the storage's writer and extracted with tarfile's `data` filter (no absolute
paths, links out of the target, or device files)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

from core.storage import LocalStorage, StoredObject


def archive(storage: LocalStorage, key: str, paths: Iterable[Path], compress: bool = True) -> StoredObject:
    """Store `paths` (files of one directory) as one tar, gzip-compressed or not (large
    optimizer states barely compress and would only cost time)."""
    with storage.writer(key) as out:
        with tarfile.open(fileobj=out, mode="w|gz" if compress else "w|") as tar:  # type: ignore[call-overload]
            for path in sorted(paths):
                tar.add(path, arcname=path.name)
    return StoredObject(key, out.bytes, out.sha256)


def extract(storage: LocalStorage, key: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    with storage.open(key) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        tar.extractall(destination, filter="data")
    return destination
