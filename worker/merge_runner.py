"""Running one merge (in its own process, worker.merge_process): claim it under a lease,
fetch the base model and extract the adapter, merge (worker.merging), archive the merged
model into one folder of one .tar in artifact storage and publish it, and always end
with the merge in a state that says what happened: a failure has its code and message,
a worker asked to stop gives the merge back to the queue at its next phase, and a merge
cancelled (or whose lease was lost) meanwhile has its outputs discarded."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from core import checkpoints, events, jobs, merge_runs, merges
from core.db import session_scope
from core.models import Merge
from core.settings import get_settings
from core.storage import get_storage
from worker import leased_work
from worker.adapter_folder import stored_adapter
from worker.archives import archive
from worker.leased_work import Run, Stopped
from worker.model_card import ModelCardFacts, latest_metrics, write_model_card

log = logging.getLogger("ftsvc.worker")


def execute_merge(merge_id: str, shutdown: threading.Event) -> None:
    leased_work.execute(merge_runs.RUNS, merge_id, shutdown, _run)


def _card(merge: Merge) -> ModelCardFacts:
    """The model card's facts: those of the adapter's job, with the metrics of the
    checkpoint merged (or the job's final ones)."""
    with session_scope() as session:
        job = jobs.get_job(session, merge.organization_id, merge.job_id)
        if merge.checkpoint_id is not None:
            metrics = checkpoints.get_checkpoint(session, job.organization_id, job.id, merge.checkpoint_id).metrics
        else:
            metrics = latest_metrics(events.metrics_for(session, job.id))
    return ModelCardFacts.of_job(job, merge.model, metrics)


def _failure(exc: BaseException) -> dict[str, Any]:
    """The merge's error: code, message and param."""
    from worker.merging import AdapterNotMergeable

    if isinstance(exc, AdapterNotMergeable):
        return {"code": "adapter_not_mergeable", "message": f"Cannot merge: {exc}", "param": "model"}
    return leased_work.failure(exc, "merge", "the full-precision model does not fit on this worker's device")


def _run(run: Run[Merge], workdir: Path) -> None:
    merge, owner, between_phases = run.row, run.owner, run.between_phases
    events = run.log
    storage, stored = get_storage(), None
    try:
        between_phases()
        events.event(f"Merge process {os.getpid()} started on {socket.gethostname()}; loading the merge stack")
        # Imported here so that a failure to import the stack also ends the merge cleanly.
        from worker.merging import default_device, merge_adapter
        from worker.model_download import fetch_model
        from worker.training import log_through_root

        log_through_root()

        with session_scope() as session:
            base = merges.base_of(session, merge.organization_id, merge.model, merge.base_model)
            quantization = merges.dequantize_from(session, merge)
        base = fetch_model(base, events)
        adapter = stored_adapter(merge.adapter_key, merge.model, workdir)
        between_phases()
        device = default_device()
        weights = "its 4-bit weights, dequantized" if quantization else "its own weights"
        events.event(f"Merging {merge.model} into {base.name} ({weights}) on {device}")
        card = _card(merge)
        folder = card.folder  # the model's name, as its adapter's archive names its folder
        result = merge_adapter(
            base.source,
            adapter,
            workdir / folder,
            dtype=merge.dtype,
            device=device,
            max_shard_size=get_settings().merge_max_shard_size,
            dequantize_from=quantization,
        )
        with session_scope() as session:
            merge_runs.record_runtime(session, merge.id, {"device": device, "dtype": result.dtype})
        events.event(
            f"Merged in {result.dtype} on {device}: {result.shards} safetensors shards, "
            f"{result.weight_bytes / 2**20:,.1f} MiB of weights (load {result.seconds['load']:.1f} s, merge "
            f"{result.seconds['merge']:.1f} s, save {result.seconds['save']:.1f} s)",
            data={"shards": result.shards, "weight_bytes": result.weight_bytes, "seconds": result.seconds},
        )
        write_model_card(result.directory, card, "merged")
        between_phases()
        filename = f"{folder}.tar"
        key = f"merges/{merge.id}/attempt-{merge.attempt}/{filename}"
        stored = archive(storage, key, result.directory.iterdir(), compress=False, folder=folder)
        registered = f"; registered as base model {merge.registered_as!r}" if merge.registered_as else ""
        with session_scope() as session:
            published = merge_runs.succeed(
                session,
                merge.id,
                owner,
                filename,
                stored,
                f"Merge succeeded: {filename} published ({stored.bytes} bytes, sha256 {stored.sha256[:12]}...)"
                + registered,
            )
        if not published:
            storage.delete(stored.key)
            events.event("The merge changed state while it was published; its archive was discarded", level="warn")
    except Stopped as stop:
        if not run.stopped(stop):
            events.event(f"The merge stopped without publishing: {stop} (cancelled, or run by another worker)")
    except Exception as exc:
        log.exception("merge %s failed", merge.id)
        run.failed(_failure(exc), exc)
        if stored is not None:
            storage.delete(stored.key)
