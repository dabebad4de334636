"""Publishing a finished job: the adapter as one .tar.gz artifact (one folder named after
the fine-tuned model, with its model card: worker.adapter_folder), also recorded as the
job's last checkpoint (OpenAI lists the final model among the checkpoints), its result
files (worker.result_files: OpenAI's metrics CSV, TensorBoard events, MLflow's metric
rows), and the move to `succeeded`, all in one transaction. Objects are written first
(atomically); if the job can no longer succeed (it was cancelled meanwhile) they are
removed again."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from core import artifacts, checkpoints, events, files, leases
from core.db import session_scope
from core.ids import new_id
from core.jobs import fine_tuned_model_name
from core.models import Job, JobMetric
from core.states import JobStatus
from core.storage import ObjectStore, StoredObject
from worker.adapter_folder import adapter_folder
from worker.archives import archive
from worker.model_card import ModelCardFacts, latest_metrics
from worker.result_files import RESULT_FILES


def _result_files(storage: ObjectStore, points: Sequence[JobMetric]) -> list[tuple[str, str, StoredObject]]:
    """The job's result files from its metric points, stored: (file id, file name, object) each."""
    stored = []
    for filename, write in RESULT_FILES:
        file_id = new_id("file")
        stored.append((file_id, filename, write(storage, f"files/{file_id}", points)))
    return stored


def publish_success(
    storage: ObjectStore,
    job: Job,
    owner: str,
    attempt: int,
    adapter_dir: Path,
    trained_tokens: int,
    steps: int,
) -> bool:
    """Only the holder of the job's lease may publish: a worker that lost its lease
    (presumed dead, replaced) has its outputs discarded. `steps`: the trainer's last step,
    the final checkpoint's."""
    with session_scope() as session:
        points = events.metrics_for(session, job.id)
    final = latest_metrics(points) | {"step": steps}
    card = ModelCardFacts.of_job(job, fine_tuned_model_name(job), final)
    with tempfile.TemporaryDirectory(dir=adapter_dir.parent) as parent:
        folder = adapter_folder(adapter_dir.iterdir(), Path(parent), card)
        # Per attempt: a replaced worker must never overwrite (or delete) the winner's object.
        adapter = archive(storage, f"artifacts/{job.id}/attempt-{attempt}/adapter.tar.gz", [folder])
    results = _result_files(storage, points)
    # What to remove once this is committed: the outputs unless the job succeeds; then a
    # checkpoint the final one replaced, if any.
    stale = [adapter.key, *(stored.key for _, _, stored in results)]
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
            result_files=[file_id for file_id, _, _ in results],
        )
        if succeeded:
            artifacts.record_artifact(session, job.id, artifacts.ADAPTER, f"{job.id}-adapter.tar.gz", adapter)
            _, stale = checkpoints.record_final(session, job.id, steps, final, adapter)
            for file_id, filename, stored in results:
                files.register_result(session, job.organization_id, file_id, filename, stored)
    for key in stale:
        storage.delete(key)
    return succeeded
