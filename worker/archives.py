"""Directories to and from single stored objects (tar archives), written atomically
through the storage's writer and extracted with tarfile's `data` filter (no absolute
paths, links out of the target, or device files)."""

from __future__ import annotations

import gzip
import tarfile
from collections.abc import Iterable
from pathlib import Path

from core.model_cache import is_weights
from core.storage import ObjectStore, ObjectWriter, StoredObject

# gzip's fastest level: on an 8B LoRA adapter (84 MB of bf16 weights) level 9 took 8.1 s
# on the H200 host for 22% smaller output, level 1 2.8 s for 21% (BENCHMARKS.md).
GZIP_LEVEL = 1


def archive(
    storage: ObjectStore, key: str, paths: Iterable[Path], compress: bool = True, folder: str | None = None
) -> StoredObject:
    """Store `paths` (files or folders, with all they hold, of one directory) under their
    names as one tar, gzip-compressed or not (large optimizer states and model weights
    barely compress and would only cost time); under `folder` when given (a merged
    model's files, listed weights last, extract into that one folder)."""
    with storage.writer(key) as out:
        if compress:
            with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as zipped:
                _write_tar(zipped, paths, folder)
        else:
            _write_tar(out, paths, folder)
    return StoredObject(key, out.bytes, out.sha256)


def _weights_last(path: Path) -> tuple[bool, str]:
    # A reader that wants only the configuration and tokenizer stops at the first
    # weights file (core.model_cache).
    return is_weights(path.name), path.name


def _write_tar(target: gzip.GzipFile | ObjectWriter, paths: Iterable[Path], folder: str | None) -> None:
    with tarfile.open(fileobj=target, mode="w|") as tar:
        for path in sorted(paths, key=_weights_last):
            tar.add(path, arcname=f"{folder}/{path.name}" if folder else path.name)


def extract(storage: ObjectStore, key: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    with storage.open(key) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        tar.extractall(destination, filter="data")
    return destination
