"""Running one job on this worker: claim it under a lease, train (resuming from its
newest checkpoint if an earlier attempt got that far), publish, and always end the
attempt with the job in a state that says what happened, never a hung `running`."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

from core import files, leases, registry
from core.datasets import DataFile
from core.db import session_scope
from core.errors import NotFound
from core.models import Job
from core.settings import get_settings
from core.specs import ResolvedSpec
from core.states import JobStatus
from core.storage import get_storage
from worker.failure_reports import classify
from worker.heartbeat import Heartbeat, new_owner
from worker.job_reporter import JobReporter
from worker.training.failures import CheckpointMissing, DataError

log = logging.getLogger("ftsvc.worker")


def _data_file(job: Job, file_id: str, param: str) -> DataFile:
    try:
        with session_scope() as session:
            return files.data_file(files.get_file(session, job.organization_id, file_id, param=param))
    except NotFound:
        raise DataError(f"File {file_id} was deleted before training started", param=param) from None


def execute_job(job_id: str) -> None:
    owner = new_owner()
    with session_scope() as session:
        claim = leases.claim(session, job_id, owner, socket.gethostname())
        if claim is None:
            leases.note_dropped_delivery(session, job_id)
    if claim is None:
        log.info("job %s is not queued; message dropped", job_id)
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"{job_id}-"))
    try:
        with Heartbeat(job_id, owner) as heartbeat:
            _run(claim, owner, heartbeat, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(claim: leases.Claim, owner: str, heartbeat: Heartbeat, workdir: Path) -> None:
    job, attempt = claim.job, claim.attempt
    spec = ResolvedSpec.model_validate(job.spec)
    reporter = JobReporter(job.id, owner, heartbeat, spec.qlora.training.keep_checkpoints)
    try:
        # Imported here so that a failure to import the stack also ends the job cleanly.
        from worker.checkpoint_storage import fetch_adapter, restore_state
        from worker.publish import publish_success
        from worker.training.recipe import JobData, Recipe
        from worker.training.runtime import pick_runtime

        quantization = spec.qlora.quantization
        runtime = pick_runtime(quantization.compute_dtype if quantization else "auto")
        reporter.runtime(runtime.describe())
        resume_from = restore_state(claim.resume_from, workdir) if claim.resume_from else None
        initial_adapter = None
        if spec.from_checkpoint and resume_from is None:
            initial_adapter = fetch_adapter(job.organization_id, spec.from_checkpoint, workdir)
            if initial_adapter is None:
                raise CheckpointMissing(
                    f"Checkpoint {spec.from_checkpoint} was deleted before the job started", param="from_checkpoint"
                )
        validation = job.validation_file
        data = JobData(
            _data_file(job, job.training_file, "training_file"),
            _data_file(job, validation, "validation_file") if validation else None,
        )
        model = registry.resolve_model(spec.model)
        interval = get_settings().checkpoint_interval_seconds
        recipe = Recipe(spec, model, data, workdir, runtime, reporter, resume_from, initial_adapter, interval)
        result = recipe.run()
        if result.stopped is None:
            if not publish_success(get_storage(), job, owner, attempt, result.adapter_dir, result.trained_tokens):
                reporter.event("The job changed state during publishing; its outputs were discarded", level="warn")
            return
    except Exception as exc:
        failure = classify(exc)
        log.exception("job %s failed (%s)", job.id, failure.code)
        with session_scope() as session:
            leases.end_run(
                session,
                job.id,
                owner,
                attempt,
                "failed",
                JobStatus.FAILED,
                level="error",
                message=f"Job failed ({failure.code}): {failure.message}",
                data=failure.details(),
                error=failure.as_error(),
            )
        return
    with session_scope() as session:
        if result.stopped == "pause":
            leases.end_run(
                session,
                job.id,
                owner,
                attempt,
                "paused",
                JobStatus.PAUSED,
                message=f"Job paused at step {result.steps}; it resumes from there",
                pause_requested=False,
            )
        elif result.stopped == "cancel":
            leases.end_run(session, job.id, owner, attempt, "cancelled")
            reporter.event(f"Training stopped at step {result.steps} after the job was cancelled")
        else:
            leases.end_run(session, job.id, owner, attempt, "lease_lost")
            reporter.event(
                f"Attempt {attempt} lost its lease at step {result.steps} and stopped without publishing",
                level="warn",
            )
