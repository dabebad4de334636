"""Adapters on an inference host: fetched from artifact storage (through core) once, and
kept in the host's model cache beside the registered models (core.model_cache), whole
or not at all: extracted into a staging directory renamed into place."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

from core.errors import NotFound
from core.inference import AdapterTarget
from core.settings import get_settings
from core.storage import get_storage
from worker.adapter_folder import CONFIG_NAME, find_adapter
from worker.archives import extract


def fetch_adapter(adapter: AdapterTarget) -> Path:
    """The directory of the adapter (peft format) on this host."""
    cache = get_settings().model_cache_root / "adapters"
    target = cache / hashlib.sha256(adapter.key.encode()).hexdigest()[:32]
    if not (target / CONFIG_NAME).is_file():
        staging = cache / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            try:
                folder = find_adapter(extract(get_storage(), adapter.key, staging))
            except FileNotFoundError:
                raise NotFound(
                    f"Fine-tuned model {adapter.name!r} was deleted", param="model", code="model_not_found"
                ) from None
            try:
                os.rename(folder, target)
            except OSError:
                if not (target / CONFIG_NAME).is_file():  # else another request finished first
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
