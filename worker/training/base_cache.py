"""A worker's pre-quantized copies of its bases: the second job on a base loads its 4-bit
weights (about 5.5 GB for an 8B model) instead of reading the 16-bit base and quantizing
it again (the bulk of a job's start-up on a GPU).

An entry is the model's `save_pretrained` (its 4-bit weights with their quantization
states, and the config that says how they are quantized) plus a manifest, cache.json,
with the size and sha256 of every file, checked before each load: a damaged entry is
removed and the base quantized from its source again, which rewrites it. An entry's
name is a hash of what made it: the base's files (names, sizes, modification times),
the quantization settings and the versions of transformers and bitsandbytes, so that a
changed base or setting never meets a stale copy. Entries are written to a staging
directory renamed into place when whole: two writers at once (two ranks, two jobs) both
end with one entry. The least recently used entries beyond FTSVC_BASE_CACHE_ENTRIES are
removed; 0 turns the cache off."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bitsandbytes
import torch
import transformers
from transformers import BitsAndBytesConfig, PreTrainedModel

from core.settings import get_settings
from worker.training.reporting import EventLog

# hit: loaded from the cache; stored: quantized from the source and written to the
# cache; unstored: quantized from the source, the write failed; prequantized: the source
# is in 4 bits already (a copy would be the same files); off: no cache.
Outcome = Literal["hit", "stored", "unstored", "prequantized", "off"]
# How a job's "Loaded ..." event says it.
SAID: dict[Outcome, str] = {
    "hit": " from this worker's pre-quantized copy",
    "stored": ", then stored a pre-quantized copy on this worker for the next job",
    "unstored": "",
    "prequantized": " (stored in 4 bits)",
    "off": "",
}

MANIFEST = "cache.json"
# Shards of this size hash in parallel when an entry is checked.
SHARD_SIZE = "1GB"
# Staging and removed directories of processes that died are removed after this long.
STALE_SECONDS = 3600.0

# Loads a model from a directory, with these arguments of `from_pretrained` besides the
# run's own: the quantization to apply to a source, none for a pre-quantized copy (whose
# config says how it is quantized: an explicit quantization_config=None would override
# that and load it as unquantized).
Loader = Callable[[str, dict[str, Any]], PreTrainedModel]


@dataclass(frozen=True)
class CacheUse:
    outcome: Outcome
    # How long checking (a hit) or writing (stored) the entry took.
    timings: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"base_cache": self.outcome} | {f"base_cache_{k}": round(v, 2) for k, v in self.timings.items()}

    @property
    def said(self) -> str:
        return SAID[self.outcome]


OFF = CacheUse("off")


class DamagedEntry(Exception):
    pass


def _is_model_file(name: str) -> bool:
    return (
        name.endswith(".safetensors")
        or name in ("config.json", "generation_config.json")
        or name.endswith(".safetensors.index.json")
    )


def entry_key(source: Path, quantization: BitsAndBytesConfig) -> str:
    """The hash of what an entry's weights depend on. A hub snapshot's files are links to
    its blobs: their sizes and times are the blobs'."""
    files = sorted(p for p in source.iterdir() if _is_model_file(p.name))
    identity = {
        "source": str(source.resolve()),
        "files": [[p.name, (s := p.stat()).st_size, s.st_mtime_ns] for p in files],
        "quantization": quantization.to_dict(),
        "versions": {"transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _quantized_already(source: Path) -> bool:
    """A base saved in 4 bits (as an entry is): its config says how it is quantized."""
    try:
        config = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "quantization_config" in config


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _describe_files(directory: Path) -> dict[str, dict[str, Any]]:
    """Each file's size and sha256, hashed in threads (hashlib releases the GIL)."""
    paths = sorted(p for p in directory.iterdir() if p.name != MANIFEST)
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(_sha256, paths))
    return {p.name: {"size": p.stat().st_size, "sha256": d} for p, d in zip(paths, digests, strict=True)}


def _check(entry: Path) -> None:
    """Raises DamagedEntry unless the entry's files are exactly those of its manifest."""
    try:
        expected = json.loads((entry / MANIFEST).read_text())["files"]
        # Sizes first: a truncated file is found without reading the others.
        sizes = {p.name: p.stat().st_size for p in entry.iterdir() if p.name != MANIFEST}
    except (OSError, ValueError, KeyError) as exc:
        raise DamagedEntry(f"unreadable manifest: {exc}") from exc
    if sizes != {name: f["size"] for name, f in expected.items()}:
        raise DamagedEntry(f"files or sizes differ from the manifest ({sorted(sizes)} on disk)")
    found = _describe_files(entry)
    for name, described in expected.items():
        if found[name]["sha256"] != described["sha256"]:
            raise DamagedEntry(f"{name}: sha256 differs from the manifest")


def _remove(directory: Path) -> None:
    """Renamed first, so that no reader sees a half-removed entry."""
    doomed = directory.with_name(f".removed-{directory.name}-{secrets.token_hex(4)}")
    try:
        os.rename(directory, doomed)
    except FileNotFoundError:
        return  # another process removed it
    shutil.rmtree(doomed, ignore_errors=True)


def _store(model: PreTrainedModel, entry: Path) -> None:
    staging = entry.with_name(f".staging-{entry.name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        model.save_pretrained(staging, safe_serialization=True, max_shard_size=SHARD_SIZE)
        (staging / MANIFEST).write_text(json.dumps({"files": _describe_files(staging)}, indent=1))
        try:
            os.rename(staging, entry)
        except OSError:
            if not (entry / MANIFEST).is_file():
                raise  # else another writer finished first: its entry is as good
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed by another process meanwhile
        return 0.0


def _evict(root: Path, keep: int) -> None:
    """The least recently used entries beyond `keep`, and what dead processes left."""
    entries, now = [], time.time()
    for path in root.iterdir():
        if not path.name.startswith("."):
            entries.append(path)
        elif now - _mtime(path) > STALE_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
    entries.sort(key=_mtime, reverse=True)
    for path in entries[keep:]:
        _remove(path)


def load(
    name: str, source: str, quantization: BitsAndBytesConfig, loader: Loader, events: EventLog
) -> tuple[PreTrainedModel, CacheUse]:
    """The base `name` (files in `source`) in 4 bits: from this worker's entry if it has
    a sound one, else quantized from the source (`loader`) and then stored."""
    settings = get_settings()
    root, keep = settings.base_cache_dir, settings.base_cache_entries
    if keep == 0 or not Path(source).is_dir():
        return loader(source, {"quantization_config": quantization}), OFF
    if _quantized_already(Path(source)):
        return loader(source, {}), CacheUse("prequantized")
    entry = root / entry_key(Path(source), quantization)
    if (entry / MANIFEST).is_file():
        started = time.monotonic()
        try:
            _check(entry)
            checked = time.monotonic() - started
            model = loader(str(entry), {})
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            _remove(entry)
            events.event(
                f"This worker's pre-quantized copy of {name} is damaged ({exc}); it was removed, and {name} is "
                "quantized from its source again",
                level="warn",
                data={"base_cache_entry": str(entry)},
            )
        else:
            with suppress(FileNotFoundError):  # evicted by another process meanwhile
                os.utime(entry)  # most recently used
            # What adapters record as their base: the source, as for a model quantized from it.
            model.name_or_path = model.config._name_or_path = source
            return model, CacheUse("hit", {"check_seconds": checked})
    model = loader(source, {"quantization_config": quantization})
    started = time.monotonic()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _store(model, entry)
        _evict(root, keep)
    except Exception as exc:  # the job goes on without the entry: it only saves the next one time
        events.event(
            f"Could not store a pre-quantized copy of {name} on this worker: {exc}",
            level="warn",
            data={"base_cache_entry": str(entry)},
        )
        return model, CacheUse("unstored")
    return model, CacheUse("stored", {"store_seconds": time.monotonic() - started})
