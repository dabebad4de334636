"""A job on several GPUs of one host (qlora.resources.gpus > 1): the job process
(worker.job_process) keeps the job's lease and starts one training process (rank) per GPU
through torch's launcher (torch.multiprocessing, with torchrun's environment: RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Rank r trains on the r-th GPU of
CUDA_VISIBLE_DEVICES (the job's GPUs when the worker set them; else the first N), in
one NCCL process group (worker.training.distributed); each runs the same recipe
(worker.runner), and rank 0 alone reports, checkpoints, publishes and ends the attempt.

The job process forwards a stop (the worker shutting down) to every rank. When a rank
fails, the launcher stops the others (SIGTERM, then SIGKILL) and the job fails with what
that rank reported, or how it died when it could not say."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.multiprocessing.spawn import ProcessContext, ProcessException, ProcessExitedException, start_processes

from core import checkpoints, jobs, leases
from core.db import session_scope
from core.models import Job
from core.settings import get_settings
from worker.failure_reports import FailureReport, Phase, classify, left_report, phase_said
from worker.job_process import stop_on_signals
from worker.runner import fail_attempt, run_rank
from worker.training import distributed
from worker.training.failures import GpusUnavailable
from worker.training.reporting import Reporter
from worker.training.runtime import Runtime

log = logging.getLogger("ftsvc.worker")

# After a rank failed, how long the others have to end on their own, and then after a
# SIGTERM, before SIGKILL (a rank waiting in a collective for the dead one does not get
# to handle the signal).
RANK_STOP_GRACE_SECONDS = 10.0
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RankedJob:
    """What each rank is given (pickled to its process): the claim, by ids."""

    organization_id: str
    job_id: str
    owner: str
    attempt: int
    checkpoint_id: str | None
    workdir: Path


def run_ranks(claim: leases.Claim, owner: str, gpus: int, workdir: Path, shutdown: threading.Event) -> None:
    job = claim.job
    try:
        os.environ.update(_rank_environment(gpus))
    except GpusUnavailable as exc:
        fail_attempt(job.id, owner, claim.attempt, classify(exc, "loading", 0))
        return
    checkpoint = claim.resume_from.id if claim.resume_from else None
    ranked = RankedJob(job.organization_id, job.id, owner, claim.attempt, checkpoint, workdir)
    context: ProcessContext = start_processes(  # type: ignore[no-untyped-call]
        _rank_main, args=(ranked,), nprocs=gpus, join=False, start_method="spawn"
    )
    try:
        _wait(context, shutdown)
    except ProcessException as exc:
        failure = _rank_failure(exc, job, workdir, gpus)
        log.error("job %s: rank %d failed: %s", job.id, exc.error_index, failure.message)
        fail_attempt(job.id, owner, claim.attempt, failure)


def _wait(context: ProcessContext, shutdown: threading.Event) -> None:
    """Until every rank ended (raises when one failed, after stopping the others)."""
    forwarded = False
    while not context.join(timeout=0.5, grace_period=RANK_STOP_GRACE_SECONDS):
        if shutdown.is_set() and not forwarded:
            # Each rank's stop flag; rank 0's decides, and every rank checkpoints with it.
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            forwarded = True


def _rank_environment(gpus: int) -> dict[str, str]:
    """torchrun's environment, common to the job's ranks (each adds its RANK)."""
    environment = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(gpus),
        "LOCAL_WORLD_SIZE": str(gpus),
    }
    where = f"worker {socket.gethostname()}"
    asked = f"This job asks for {gpus} GPUs (qlora.resources.gpus)"
    if not torch.cuda.is_available():
        if get_settings().cpu_ranks:
            return environment
        raise GpusUnavailable(
            f"{asked}, but {where} has no GPU (FTSVC_CPU_RANKS lets its ranks train on the CPU, for tests)",
            param="qlora.resources.gpus",
        )
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    count = torch.cuda.device_count()
    if count < gpus:
        shown = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise GpusUnavailable(f"{asked}, but {where} has {count}{shown}", param="qlora.resources.gpus")
    chosen = devices[:gpus] if devices else [str(index) for index in range(gpus)]
    return environment | {"CUDA_VISIBLE_DEVICES": ",".join(chosen)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _rank_main(rank: int, ranked: RankedJob) -> None:
    """A rank's process (torch.multiprocessing's spawn: a fresh interpreter)."""
    shutdown = stop_on_signals()
    if sys.platform == "linux":
        # Dies with the job process: a rank never trains on for a job whose process was killed.
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(name)s %(levelname)s %(message)s")
    distributed.join()
    try:
        org_id, job_id, checkpoint_id = ranked.organization_id, ranked.job_id, ranked.checkpoint_id
        with session_scope() as session:
            job = jobs.get_job(session, org_id, job_id)
            checkpoint = checkpoints.get_checkpoint(session, org_id, job_id, checkpoint_id) if checkpoint_id else None
        run_rank(leases.Claim(job, ranked.attempt, checkpoint), ranked.owner, rank, ranked.workdir, shutdown)
    finally:
        distributed.leave()


def report_ranks(reporter: Reporter, runtime: Runtime) -> None:
    """Rank 0 says which processes train the job (every rank takes part)."""
    ranks = distributed.from_every_rank({"rank": distributed.rank(), "pid": os.getpid(), "device": runtime.device})
    backend = "NCCL" if runtime.on_cuda else "gloo"
    reporter.event(
        f"Training on {len(ranks)} {'GPUs' if runtime.on_cuda else 'CPU processes'} with DDP over {backend}: "
        f"one process per device, each with its share of every batch; rank 0 reports",
        data={"world_size": len(ranks), "backend": backend.lower(), "ranks": ranks},
    )


def _rank_failure(exc: ProcessException, job: Job, workdir: Path, world: int) -> FailureReport:
    """The job's failure, from the first rank that failed: what it reported (its own
    error: data, memory, ...), or how it ended."""
    rank = exc.error_index
    reported = left_report(workdir, rank)
    if reported is not None:
        return replace(reported, message=f"{reported.message} (rank {rank} of {world})")
    with session_scope() as session:
        progress = jobs.get_job(session, job.organization_id, job.id).progress
    step = int(progress["step"]) if progress else 0
    phase: Phase = "training" if progress else "loading"
    said = phase_said(phase, step)
    if isinstance(exc, ProcessExitedException) and exc.signal_name:
        how = f"was killed by {exc.signal_name}"
    elif isinstance(exc, ProcessExitedException):
        how = f"exited with code {exc.exit_code}"
    else:  # raised before or after the recipe ran
        how = f"raised {str(exc).strip().splitlines()[-1]}"
    return FailureReport(
        "rank_failed",
        f"{said}: rank {rank} of {world} (process {exc.error_pid}) {how}; the job's other ranks were stopped",
        None,
        False,
        phase,
        str(exc)[-2000:],
    )
