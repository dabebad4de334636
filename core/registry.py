"""Base models: a directory under the models root, a Hugging Face hub id that the
worker downloads where it has network, or a model an organization registered (a merged
model, core.registered_models), which is its own: other organizations neither see nor
use it. No database here: the training recipe resolves models too."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidRequest
from core.settings import get_settings

LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    # What `from_pretrained` is given: a local directory or the hub id itself.
    source: str
    local: bool
    created_at: int = 0
    # A registered model: its archive in artifact storage, extracted into `source` (a
    # directory of the host's model cache) on first use there (core.model_cache).
    archive_key: str | None = None
    # Who may use it: "local" for the service's base models, else the organization.
    owned_by: str = "local"


def _local_dir(name: str) -> Path | None:
    if not LOCAL_NAME.match(name) or ".." in name:
        return None
    path = get_settings().models_root / name
    return path if (path / "config.json").is_file() else None


def local_config(name: str) -> dict[str, Any] | None:
    """The config.json of a base model under the models root; None for any other model
    (a hub id, a registered model: their configuration is read by a pre-flight worker)."""
    path = _local_dir(name)
    return dict(json.loads((path / "config.json").read_text())) if path is not None else None


def list_models() -> list[ModelRef]:
    root = get_settings().models_root
    if not root.is_dir():
        return []
    return [
        ModelRef(p.name, str(p), True, int(p.stat().st_mtime))
        for p in sorted(root.iterdir())
        if _local_dir(p.name) is not None
    ]


def _refuse_unsafe(name: str, path: Path) -> None:
    """Models run no code of their own and load no pickles."""
    config = json.loads((path / "config.json").read_text())
    if "auto_map" in config:
        raise InvalidRequest(
            f"Model {name!r} needs its own Python code (config.json has auto_map); trust_remote_code is never "
            "enabled by this service",
            param="model",
            code="remote_code_refused",
        )
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
        raise InvalidRequest(
            f"Model {name!r} has no safetensors weights"
            + (f" (only pickle files: {', '.join(pickled)}, which this service refuses to load)" if pickled else ""),
            param="model",
            code="unsafe_weights_refused" if pickled else "model_not_found",
        )


def resolve_model(name: str, registered: Sequence[ModelRef] = ()) -> ModelRef:
    """The base model `name`: one of `registered` (an organization's own, found first),
    a directory under the models root, or a hub id."""
    for ref in registered:
        if ref.name == name:
            return ref
    local = _local_dir(name)
    if local is not None:
        _refuse_unsafe(name, local)
        return ModelRef(name, str(local), True)
    if HUB_ID.match(name) and get_settings().allow_hub_models:
        return ModelRef(name, name, False)
    known = ", ".join(m.name for m in [*registered, *list_models()]) or "none"
    raise InvalidRequest(
        f"Unknown model {name!r}: not a directory under the models root (local models: {known})"
        + (" and not a Hugging Face hub id of the form owner/name" if get_settings().allow_hub_models else ""),
        param="model",
        code="model_not_found",
    )


def modified_at(model_ref: ModelRef) -> float:
    """When a local model's files last changed (0 for hub ids, which name a revision):
    what is derived from a model is cached under this, so a replaced model is re-read."""
    if not model_ref.local:
        return 0.0
    if model_ref.archive_key is not None:  # a registered model never changes
        return float(model_ref.created_at)
    return max((p.stat().st_mtime for p in Path(model_ref.source).iterdir()), default=0.0)
