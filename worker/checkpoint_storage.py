"""Checkpoints to and from artifact storage. The trainer saves a checkpoint directory
(adapter, optimizer, scheduler, RNG states, trainer state with the step and data
position); it is stored as two objects: the adapter alone (what users download or start
another job from) and the whole directory (what a resumed run loads). Only the lease
holder may record one (core.checkpoints.record_if_leased)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core import checkpoints, fine_tuned_models
from core.db import session_scope
from core.errors import Conflict, NotFound
from core.models import Checkpoint
from core.storage import get_storage
from worker.archives import archive, extract

log = logging.getLogger("ftsvc.worker")
# What a checkpoint directory holds beside the adapter (transformers' Trainer names).
TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


def _is_adapter_file(path: Path) -> bool:
    return path.name not in TRAINER_STATE and not path.name.startswith("rng_state")


def publish_checkpoint(
    job_id: str, owner: str, step: int, directory: Path, metrics: dict[str, Any], keep: int
) -> Checkpoint | None:
    storage = get_storage()
    prefix = f"checkpoints/{job_id}/step-{step}-{owner.rsplit(':', 1)[-1]}"
    adapter = archive(storage, f"{prefix}/adapter.tar.gz", filter(_is_adapter_file, directory.iterdir()))
    state = archive(storage, f"{prefix}/state.tar", directory.iterdir(), compress=False)
    with session_scope() as session:
        checkpoint, stale = checkpoints.record_if_leased(session, job_id, owner, step, metrics, adapter, state, keep)
    for key in stale:
        storage.delete(str(Path(key).parent))  # the checkpoint's folder, both objects
    if checkpoint is None:
        log.warning("job %s: lease lost; checkpoint at step %d discarded", job_id, step)
    return checkpoint


def restore_state(checkpoint: Checkpoint, workdir: Path) -> Path:
    """The checkpoint as the trainer's `resume_from_checkpoint` directory."""
    if checkpoint.state_key is None:  # core.checkpoints.latest never offers one
        raise ValueError(f"checkpoint {checkpoint.id} is a final adapter, with no trainer state to resume from")
    return extract(get_storage(), checkpoint.state_key, workdir / "resume" / f"checkpoint-{checkpoint.step}")


def fetch_adapter(org_id: str, name: str, param: str, workdir: Path) -> Path | None:
    """The directory of the adapter `name` stands for (a fine-tuned model, a checkpoint's
    name or id; core.fine_tuned_models.find), among the organization's, or None if it no
    longer exists."""
    try:
        with session_scope() as session:
            key = fine_tuned_models.find(session, org_id, name, param).adapter_key
    except (NotFound, Conflict):
        return None
    folder = extract(get_storage(), key, workdir / "initial-adapter")
    # The archive may hold the adapter in a folder of its own, and a DPO job's a frozen
    # reference adapter beside it (ref/): the outermost adapter_config.json is the one.
    configs = sorted(folder.rglob("adapter_config.json"), key=lambda path: len(path.parts))
    return configs[0].parent if configs else None
