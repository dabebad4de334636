"""An adapter as users get it: one folder named after its model, with the adapter (PEFT
format) and tokenizer as training saved them, but naming the base model by its public id
instead of the path this worker loaded it from, and with its model card as README.md
(instead of peft's empty template)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from core.errors import Conflict
from core.storage import get_storage
from worker.archives import extract
from worker.model_card import CARD_NAME, ModelCardFacts, write_model_card

CONFIG_NAME = "adapter_config.json"  # peft's
# Where peft's adapter_config.json names the base model (prompt tuning initialised from a
# text also names its tokenizer): a path on the worker, which elsewhere leaks where the
# service keeps its models and cannot load.
BASE_MODEL_KEYS = ("base_model_name_or_path", "tokenizer_name_or_path")


def adapter_folder(files: Iterable[Path], parent: Path, card: ModelCardFacts) -> Path:
    """The adapter of `files` (those of one saved adapter) as `parent/<card.folder>`."""
    folder = parent / card.folder
    folder.mkdir(parents=True)
    for path in files:
        if path.name == CONFIG_NAME:
            config = json.loads(path.read_text())
            config |= {key: card.base_model for key in BASE_MODEL_KEYS if config.get(key)}
            (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        elif path.name != CARD_NAME:
            os.link(path, folder / path.name)  # the weights as they are, without a copy
    write_model_card(folder, card, "adapter")
    return folder


def find_adapter(extracted: Path) -> Path:
    """The adapter in an extracted adapter archive: its one folder (archives stored before
    adapters had one hold the files at the top)."""
    return extracted if (extracted / CONFIG_NAME).is_file() else next(extracted.iterdir())


def stored_adapter(key: str, name: str, workdir: Path) -> Path:
    """The adapter of the fine-tuned model or checkpoint `name`, stored as `key`,
    extracted under `workdir` (a merge's, an evaluation's); 409 when it is gone."""
    try:
        extracted = extract(get_storage(), key, workdir / "adapter")
    except FileNotFoundError:
        raise Conflict(
            f"The adapter of {name} is no longer stored (its checkpoint was pruned or its model deleted)",
            param="model",
            code="adapter_not_found",
        ) from None
    return find_adapter(extracted)
