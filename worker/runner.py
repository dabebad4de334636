"""Running one job (in its own process, worker.job_process): claim it under a lease,
train (resuming from its newest checkpoint if an earlier attempt got that far),
publish (then start the evaluation its spec asks for, if any), and always end the
attempt with the job in a state that says what happened, never a hung `running`: a
failure names its phase, and a worker that is stopping gives the job back to the queue
after a checkpoint."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from contextlib import nullcontext
from pathlib import Path

from core import evaluations, files, fine_tuned_models, jobs, leases, registered_models
from core.datasets import DataFile
from core.db import session_scope
from core.errors import NotFound, ServiceError
from core.models import Job
from core.settings import get_settings
from core.specs import EvaluationRequest, ResolvedSpec
from core.states import JobStatus
from core.storage import get_storage
from worker.failure_reports import FailureReport, Phase, classify, leave_report
from worker.heartbeat import Heartbeat, new_owner
from worker.job_reporter import JobReporter
from worker.training import job_clock
from worker.training.failures import CheckpointMissing, DataError
from worker.training.reporting import OtherRankReporter, Reporter

log = logging.getLogger("ftsvc.worker")


def _data_file(job: Job, file_id: str, param: str) -> DataFile:
    try:
        with session_scope() as session:
            return files.data_file(files.get_file(session, job.organization_id, file_id, param=param))
    except NotFound:
        raise DataError(f"File {file_id} was deleted before training started", param=param) from None


def execute_job(job_id: str, shutdown: threading.Event) -> None:
    """`shutdown`: set when the worker is asked to stop; the run then checkpoints after
    its current step and gives the job back. A job on several GPUs trains in one process
    per GPU (worker.ranks) while this one holds the lease."""
    owner = new_owner()
    with session_scope() as session:
        claim = leases.claim(session, job_id, owner, socket.gethostname())
        if claim is None:
            leases.note_dropped_delivery(session, job_id)
    if claim is None:
        log.info("job %s is not queued; message dropped", job_id)
        return
    if shutdown.is_set():  # asked to stop before anything was loaded
        _give_back(job_id, owner, claim.attempt, claim.resume_from.step if claim.resume_from else 0)
        return
    gpus = ResolvedSpec.model_validate(claim.job.spec).qlora.resources.gpus
    workdir = Path(tempfile.mkdtemp(prefix=f"{job_id}-"))
    try:
        with Heartbeat(job_id, owner) as heartbeat:
            if gpus == 1:
                _run(claim, owner, heartbeat.lost, workdir, shutdown)
            else:
                from worker.ranks import run_ranks  # torch, which only a job's process imports

                run_ranks(claim, owner, gpus, workdir, shutdown)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_rank(claim: leases.Claim, owner: str, rank: int, workdir: Path, shutdown: threading.Event) -> None:
    """One rank of a job on several GPUs, in a process of its own (worker.ranks), in the
    job's process group. The job process renews the lease: this rank learns that it was
    lost from the job's record."""
    _run(claim, owner, threading.Event(), workdir, shutdown, rank)


def _run(
    claim: leases.Claim,
    owner: str,
    lease_lost: threading.Event,
    workdir: Path,
    shutdown: threading.Event,
    rank: int | None = None,
) -> None:
    """`rank`: this process's rank when the job trains on several GPUs, None on one. Rank
    0 reports, publishes and ends the attempt as a single process does; the others only
    train. A failure on any rank is recorded by the job process (worker.ranks), from the
    report the rank leaves in `workdir`."""
    job, attempt = claim.job, claim.attempt
    spec = ResolvedSpec.model_validate(job.spec)
    main = rank in (None, 0)
    keep = spec.qlora.training.keep_checkpoints
    reporter: Reporter = JobReporter(job, owner, lease_lost, keep, shutdown) if main else OtherRankReporter()
    # Each rank's own copies of what it loads from storage; the trainer's directory is shared.
    scratch = workdir if rank is None else workdir / f"rank-{rank}"
    phase: Phase = "loading"
    recipe = None
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")  # set by the worker: the GPUs given to this job alone
    standby = job_clock.handed_over()  # started ahead, its imports done (worker.standbys)
    reporter.event(
        f"Job process {os.getpid()} started on {socket.gethostname()}"
        + (f" with GPU(s) {gpus}" if gpus is not None else "")
        + ("; a standby process, the training stack already loaded" if standby else "; loading the training stack"),
        data={"host": socket.gethostname(), "cuda_visible_devices": gpus, "standby_process": standby},
    )
    try:
        # Imported here so that a failure to import the stack also ends the job cleanly.
        from worker.checkpoint_storage import fetch_adapter, restore_state
        from worker.model_download import fetch_model
        from worker.publish import publish_success
        from worker.ranks import report_ranks
        from worker.training import log_through_root
        from worker.training.recipe import JobData, Recipe
        from worker.training.runtime import pick_runtime
        from worker.training.tracking import tracking_callbacks

        log_through_root()

        quantization = spec.qlora.quantization
        runtime = pick_runtime(quantization.compute_dtype if quantization else "auto")
        described = runtime.describe()
        reporter.runtime(described)
        reporter.event(
            f"Running on {socket.gethostname()}: {runtime.device} ({runtime.device_name}, "
            f"{runtime.memory_bytes / 2**30:.0f} GiB), {runtime.compute_dtype} compute, torch {described['torch']}",
            data=dict(described),
        )
        if rank is not None:
            report_ranks(reporter, runtime)
        resume_from = restore_state(claim.resume_from, scratch) if claim.resume_from else None
        initial_adapter = None
        continued = fine_tuned_models.continued_from(job.model, spec.from_checkpoint)
        if continued and resume_from is None:
            name, param = continued
            initial_adapter = fetch_adapter(job.organization_id, name, param, scratch)
            if initial_adapter is None:
                raise CheckpointMissing(f"{name} was deleted before the job started", param=param)
        validation = job.validation_file
        data = JobData(
            _data_file(job, job.training_file, "training_file"),
            _data_file(job, validation, "validation_file") if validation else None,
        )
        with session_scope() as session:
            base = registered_models.resolve_for(session, job.organization_id, job.base_model)
        model = fetch_model(base, reporter)
        interval = get_settings().checkpoint_interval_seconds
        recipe = Recipe(spec, model, data, workdir, runtime, reporter, resume_from, initial_adapter, interval)
        with tracking_callbacks(job.id, spec, reporter, workdir) if main else nullcontext(()) as callbacks:
            result = recipe.run(callbacks)
        if not main:
            return
        if result.stopped is None:
            phase = "publishing"
            published = publish_success(
                get_storage(),
                job,
                owner,
                attempt,
                result.adapter_dir,
                result.trained_tokens,
                result.steps,
            )
            if not published:
                reporter.event("The job changed state during publishing; its outputs were discarded", level="warn")
            elif spec.qlora.evaluation is not None:
                _start_evaluation(job, spec.qlora.evaluation, reporter)
            return
    except Exception as exc:
        progress = recipe.progress if recipe else None
        if phase == "loading" and progress and progress.training_started:
            phase = "training"
        failure = classify(exc, phase, progress.step if progress else 0)
        if rank is not None:
            leave_report(workdir, rank, failure)
            raise
        log.exception("job %s failed (%s)", job.id, failure.code)
        fail_attempt(job.id, owner, attempt, failure)
        return
    if result.stopped == "shutdown":
        _give_back(job.id, owner, attempt, result.steps)
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


def _start_evaluation(job: Job, request: EvaluationRequest, reporter: Reporter) -> None:
    """The evaluation the job's spec asks for, once it succeeded (its examples' file may
    have been deleted meanwhile: the job stays succeeded and its log says so)."""
    try:
        evaluations.submit_evaluation(job.organization_id, job.id, request)
    except ServiceError as exc:
        reporter.event(f"The evaluation asked for in qlora.evaluation could not start: {exc.message}", level="warn")


def fail_attempt(job_id: str, owner: str, attempt: int, failure: FailureReport) -> None:
    with session_scope() as session:
        leases.end_run(
            session,
            job_id,
            owner,
            attempt,
            "failed",
            JobStatus.FAILED,
            level="error",
            message=f"Job failed ({failure.code}): {failure.message}",
            data=failure.details(),
            error=failure.as_error(),
        )


def _give_back(job_id: str, owner: str, attempt: int, steps: int) -> None:
    """Back to the queue, and to the broker once that is committed (if the message
    cannot be sent, the maintenance loop sends it)."""
    with session_scope() as session:
        given_back = leases.give_back(session, job_id, owner, attempt, steps)
    if given_back:
        jobs.publish(job_id)
