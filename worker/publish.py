"""Publishing a finished job: the adapter as one .tar.gz artifact (one folder named after
the fine-tuned model, with its model card), the metrics as a CSV result file (OpenAI's
results-file shape), and the move to `succeeded`, all in one transaction. Objects are
written first (atomically); if the job can no longer succeed (it was cancelled meanwhile)
they are removed again."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

from core import artifacts, events, files, leases
from core.db import session_scope
from core.ids import new_id
from core.jobs import fine_tuned_model_name
from core.models import Job, JobMetric
from core.states import JobStatus
from core.storage import LocalStorage, StoredObject
from worker.adapter_folder import adapter_folder
from worker.archives import archive
from worker.model_card import ModelCardFacts, latest_metrics

CSV_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


def _metrics_csv(storage: LocalStorage, points: Sequence[JobMetric], key: str) -> StoredObject:
    rows: dict[int, dict[str, object]] = {}
    for m in points:
        row = rows.setdefault(m.step, {"step": m.step})
        row[f"{m.split}_loss"] = m.loss
        row[f"{m.split}_mean_token_accuracy"] = m.mean_token_accuracy
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows[step] for step in sorted(rows))
    with storage.writer(key) as out:
        out.write(text.getvalue().encode())
    return StoredObject(key, out.bytes, out.sha256)


def publish_success(
    storage: LocalStorage, job: Job, owner: str, attempt: int, adapter_dir: Path, trained_tokens: int
) -> bool:
    """Only the holder of the job's lease may publish: a worker that lost its lease
    (presumed dead, replaced) has its outputs discarded."""
    with session_scope() as session:
        points = events.metrics_for(session, job.id)
    card = ModelCardFacts.of_job(job, fine_tuned_model_name(job), latest_metrics(points))
    with tempfile.TemporaryDirectory(dir=adapter_dir.parent) as parent:
        folder = adapter_folder(adapter_dir.iterdir(), Path(parent), card)
        # Per attempt: a replaced worker must never overwrite (or delete) the winner's object.
        adapter = archive(storage, f"artifacts/{job.id}/attempt-{attempt}/adapter.tar.gz", [folder])
    results_id = new_id("file")
    results = _metrics_csv(storage, points, f"files/{results_id}")
    with session_scope() as session:
        succeeded = leases.end_run(
            session,
            job.id,
            owner,
            attempt,
            "succeeded",
            JobStatus.SUCCEEDED,
            message=f"Job succeeded: adapter published ({adapter.bytes} bytes, sha256 {adapter.sha256[:12]}...)",
            fine_tuned_model=fine_tuned_model_name(job),
            trained_tokens=trained_tokens,
            result_files=[results_id],
        )
        if succeeded:
            artifacts.record_artifact(session, job.id, artifacts.ADAPTER, f"{job.id}-adapter.tar.gz", adapter)
            files.register_result(session, job.organization_id, results_id, "step_metrics.csv", results)
    if not succeeded:
        storage.delete(adapter.key)
        storage.delete(results.key)
    return succeeded
