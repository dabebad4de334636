"""Registered models on a host. An organization's registered model (a merged model) is
stored once, as the archive its merge published, in artifact storage: the one store
every host shares. A host that needs one extracts it into its model cache the first
time: the whole model for training (or merging) on it, only its configuration and
tokenizer for a pre-flight worker, which reads no weights. The archive lists those small
files before the weights (worker.archives), so the tokenizer's extraction stops reading
at the first weights file.

Extractions go to a staging directory renamed into place when complete, so a directory
in the cache is always whole, and two processes extracting at once both end with it."""

from __future__ import annotations

import os
import secrets
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from core.errors import InvalidRequest
from core.registry import ModelRef
from core.storage import get_storage

# The suffix of a cache directory that holds a model's files but not its weights.
WITHOUT_WEIGHTS = ".tokenizer"


def is_weights(name: str) -> bool:
    return name.endswith(".safetensors")


def _complete(directory: Path) -> bool:
    return (directory / "config.json").is_file()


def is_cached(model: ModelRef) -> bool:
    """Whether the whole registered model is on this host already."""
    return _complete(Path(model.source))


def materialize(model: ModelRef, weights: bool = True) -> ModelRef:
    """The model with `source` a directory of this host that holds its files (without
    the weights when `weights` is False, if the whole model is not there already). A
    model that is not registered is returned as it is."""
    if model.archive_key is None:
        return model
    whole = Path(model.source)
    if is_cached(model):
        return model
    target = whole if weights else whole.with_name(whole.name + WITHOUT_WEIGHTS)
    if not _complete(target):
        _extract(model, model.archive_key, target, weights)
    return replace(model, source=str(target))


def _members(tar: tarfile.TarFile, weights: bool) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        if not weights and is_weights(member.name):
            return  # the weights come last: nothing else to read
        yield member


def _extract(model: ModelRef, key: str, target: Path, weights: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        try:
            stream = get_storage().open(key)
        except FileNotFoundError:
            raise InvalidRequest(
                f"The registered model {model.name!r} has no stored weights any more",
                param="model",
                code="model_not_found",
            ) from None
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            tar.extractall(staging, members=_members(tar, weights), filter="data")
        [folder] = staging.iterdir()  # the archive's one top folder
        try:
            os.rename(folder, target)
        except OSError:
            if not _complete(target):  # else another process finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
