"""Checkpoints to and from artifact storage. The trainer saves a checkpoint directory
(adapter, optimizer, scheduler, RNG states, trainer state with the step and data
position); it is stored as two objects: the adapter alone, as users get it
(worker.adapter_folder: what they download or start another job from), and the whole
directory as the trainer saved it (what a resumed run loads). Only the lease holder may
record one (core.checkpoints.record_if_leased)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from core import checkpoints, fine_tuned_models
from core.db import session_scope
from core.errors import Conflict, NotFound
from core.fine_tuned_models import checkpoint_name
from core.models import Checkpoint, Job
from core.storage import get_storage
from worker.adapter_folder import adapter_folder, find_adapter
from worker.archives import archive, extract
from worker.model_card import ModelCardFacts

log = logging.getLogger("ftsvc.worker")
# What a checkpoint directory holds beside the adapter (transformers' Trainer names).
TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


def _is_adapter_file(path: Path) -> bool:
    return path.name not in TRAINER_STATE and not path.name.startswith("rng_state")


def publish_checkpoint(
    job: Job, owner: str, step: int, directory: Path, metrics: dict[str, Any], keep: int
) -> Checkpoint | None:
    storage = get_storage()
    prefix = f"checkpoints/{job.id}/step-{step}-{owner.rsplit(':', 1)[-1]}"
    card = ModelCardFacts.of_job(job, checkpoint_name(job, step), metrics)
    with tempfile.TemporaryDirectory(dir=directory.parent) as parent:
        folder = adapter_folder(filter(_is_adapter_file, directory.iterdir()), Path(parent), card)
        adapter = archive(storage, f"{prefix}/adapter.tar.gz", [folder])
    state = archive(storage, f"{prefix}/state.tar", directory.iterdir(), compress=False)
    with session_scope() as session:
        checkpoint, stale = checkpoints.record_if_leased(session, job.id, owner, step, metrics, adapter, state, keep)
    for key in stale:
        storage.delete(str(Path(key).parent))  # the checkpoint's folder, both objects
    if checkpoint is None:
        log.warning("job %s: lease lost; checkpoint at step %d discarded", job.id, step)
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
    return find_adapter(extract(get_storage(), key, workdir / "initial-adapter"))
