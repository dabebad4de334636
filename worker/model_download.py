"""A base model's files on this host before it loads: a hub model's downloaded, with
events that say how much is fetched and how long it took (the silence of a
multi-gigabyte download otherwise looks like a hung job), only what loading reads
(configs, tokenizer files and safetensors weights: pickle weights are never loaded, so
never fetched); an organization's registered model extracted from artifact storage
into the host's model cache (core.model_cache)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from core import model_cache
from core.registry import ModelRef
from worker.training.failures import ModelLoadError
from worker.training.reporting import EventLog

LOADED_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def fetch_hub_model(model: ModelRef, reporter: EventLog) -> ModelRef:
    """The model with `source` its local snapshot; a local model as it is."""
    if model.local:
        return model
    from huggingface_hub import snapshot_download

    try:
        plan: Any = snapshot_download(model.name, allow_patterns=LOADED_FILES, dry_run=True)
        wanted = [f for f in plan if f.will_download]
        size = sum(f.file_size or 0 for f in wanted)
        cached = sum(f.file_size or 0 for f in plan if not f.will_download)
        if wanted:
            reporter.event(
                f"Downloading {model.name} from the Hugging Face hub: {len(wanted)} files, {_mib(size)}"
                + (f" ({_mib(cached)} already cached)" if cached else ""),
                data={"files": len(wanted), "bytes": size, "cached_bytes": cached},
            )
        started = time.monotonic()
        path = snapshot_download(model.name, allow_patterns=LOADED_FILES)
    except Exception as exc:
        raise ModelLoadError(f"Cannot download {model.name} from the Hugging Face hub: {exc}", param="model") from exc
    seconds = time.monotonic() - started
    reporter.event(
        f"Downloaded {model.name}: {_mib(size)} in {seconds:.1f} s" if wanted else f"{model.name} is in the hub cache",
        data={"bytes": size, "seconds": round(seconds, 2), "path": str(path)},
    )
    return replace(model, source=str(path))


def fetch_model(model: ModelRef, reporter: EventLog) -> ModelRef:
    """The model with `source` a local directory that holds all of its files."""
    if model.archive_key is None:
        return fetch_hub_model(model, reporter)
    if model_cache.is_cached(model):
        return model
    reporter.event(f"Extracting the registered model {model.name} into this host's model cache")
    started = time.monotonic()
    local = model_cache.materialize(model)
    reporter.event(f"Extracted {model.name} in {time.monotonic() - started:.1f} s", data={"path": local.source})
    return local
