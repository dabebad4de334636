"""Base models: a directory under the models root, or a Hugging Face hub id that the
worker downloads where it has network."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

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


def _local_dir(name: str) -> Path | None:
    if not LOCAL_NAME.match(name) or ".." in name:
        return None
    path = get_settings().models_root / name
    return path if (path / "config.json").is_file() else None


def list_models() -> list[ModelRef]:
    root = get_settings().models_root
    if not root.is_dir():
        return []
    return [model for p in sorted(root.iterdir()) if (model := local_model(p.name)) is not None]


def local_model(name: str) -> ModelRef | None:
    """The base model `name` among those `list_models` lists, or None."""
    path = _local_dir(name)
    return ModelRef(name, str(path), True, int(path.stat().st_mtime)) if path is not None else None


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


def resolve_model(name: str) -> ModelRef:
    local = _local_dir(name)
    if local is not None:
        _refuse_unsafe(name, local)
        return ModelRef(name, str(local), True)
    if HUB_ID.match(name) and get_settings().allow_hub_models:
        return ModelRef(name, name, False)
    known = ", ".join(m.name for m in list_models()) or "none"
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
    return max((p.stat().st_mtime for p in Path(model_ref.source).iterdir()), default=0.0)
