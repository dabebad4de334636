"""Running one job on this worker: claim it, train, publish, and always end in a final
state with an error that says what went wrong, never a hung `running`."""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

from sqlalchemy import select

from core import registry
from core.datasets import DataFile
from core.db import session_scope
from core.ids import now
from core.jobs import transition
from core.models import File, Job
from core.specs import JobSpec
from core.states import JobStatus
from core.storage import get_storage
from worker.failures import DataError, classify
from worker.reporting import JobReporter

log = logging.getLogger("ftsvc.worker")


def _claim(job_id: str) -> Job | None:
    """queued -> running in one conditional UPDATE: a duplicate message or a job cancelled
    before it started is dropped here."""
    with session_scope() as session:
        if not transition(
            session,
            job_id,
            JobStatus.RUNNING,
            message=f"Worker {socket.gethostname()} started the job",
            worker=socket.gethostname(),
            started_at=now(),
        ):
            return None
        return session.scalar(select(Job).where(Job.id == job_id))


def _data_file(file_id: str | None) -> DataFile | None:
    if file_id is None:
        return None
    with session_scope() as session:
        file = session.scalar(select(File).where(File.id == file_id))
    if file is None:
        raise DataError(f"File {file_id} was deleted before training started", param="training_file")
    return DataFile(get_storage().path(file.storage_key), file.file_type, file.format)  # type: ignore[arg-type]


def execute_job(job_id: str) -> None:
    job = _claim(job_id)
    if job is None:
        log.info("job %s is not queued; message dropped", job_id)
        return
    reporter = JobReporter(job_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"{job_id}-"))
    try:
        # Imported here so that a failure to import the stack also ends the job cleanly.
        from worker.publish import publish_success
        from worker.training.recipe import JobData, Recipe
        from worker.training.runtime import pick_runtime

        spec = JobSpec.model_validate(job.spec)
        quantization = spec.qlora.quantization
        runtime = pick_runtime(quantization.compute_dtype if quantization else "auto")
        reporter.update(runtime=runtime.describe())
        data = JobData(_data_file(job.training_file), _data_file(job.validation_file))  # type: ignore[arg-type]
        recipe = Recipe(spec, registry.resolve_model(spec.model), data, workdir, runtime, reporter)
        result = recipe.run()
        if result.cancelled:
            reporter.event(f"Training stopped at step {result.steps} after the job was cancelled")
            return
        if not publish_success(get_storage(), job, result.adapter_dir, result.trained_tokens):
            reporter.event("The job changed state during publishing; its outputs were discarded", level="warn")
    except Exception as exc:
        failure = classify(exc)
        log.exception("job %s failed (%s)", job_id, failure.code)
        with session_scope() as session:
            transition(
                session,
                job_id,
                JobStatus.FAILED,
                level="error",
                message=f"Job failed ({failure.code}): {failure.message}",
                error=failure.as_error(),
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
