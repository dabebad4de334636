"""Checkpoints in artifact storage. The trainer saves a checkpoint directory (adapter,
optimizer, scheduler, RNG states, trainer state with the step and data position); it is
stored as two objects: the adapter alone (what users download or start another job
from) and the whole directory (what a resumed run loads). Only the lease holder may
record one."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core import checkpoints
from core.db import session_scope
from core.events import add_event
from core.models import Checkpoint, Job
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
        # Locks the job's row: the reaper cannot take the lease between check and insert.
        held = session.scalar(select(Job.id).where(Job.id == job_id, Job.lease_owner == owner).with_for_update())
        if held is None:
            stale = [adapter.key, state.key]
            checkpoint = None
        else:
            checkpoint = checkpoints.record(session, job_id, step, metrics, adapter, state)
            add_event(
                session,
                job_id,
                f"Checkpoint {checkpoint.id} saved at step {step}",
                data={"checkpoint_id": checkpoint.id, "step": step, "state_bytes": state.bytes},
            )
            stale = checkpoints.prune(session, job_id, keep)
    for key in stale:
        storage.delete(str(Path(key).parent))  # the checkpoint's folder, both objects
    if checkpoint is None:
        log.warning("job %s: lease lost; checkpoint at step %d discarded", job_id, step)
    return checkpoint


def checkpoint_metrics(log_history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """OpenAI's checkpoint metrics from the trainer's log: the newest train and
    validation values at or before `step`."""
    metrics: dict[str, Any] = {"step": step}
    for entry in log_history:
        if entry.get("step", 0) > step:
            continue
        if "loss" in entry:
            metrics["train_loss"] = entry["loss"]
            metrics["train_mean_token_accuracy"] = entry.get("mean_token_accuracy")
        if "eval_loss" in entry:
            metrics["valid_loss"] = entry["eval_loss"]
            metrics["valid_mean_token_accuracy"] = entry.get("eval_mean_token_accuracy")
    return metrics


def restore_state(checkpoint: Checkpoint, workdir: Path) -> Path:
    """The checkpoint as the trainer's `resume_from_checkpoint` directory."""
    return extract(get_storage(), checkpoint.state_key, workdir / "resume" / f"checkpoint-{checkpoint.step}")


def fetch_adapter(checkpoint_id: str, workdir: Path) -> Path | None:
    """The adapter of a checkpoint (of any job), or None if it no longer exists."""
    with session_scope() as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.id == checkpoint_id))
    if checkpoint is None:
        return None
    return extract(get_storage(), checkpoint.adapter_key, workdir / "initial-adapter")
