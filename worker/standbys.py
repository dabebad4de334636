"""Standby job processes: a training job's process (`python -m worker.job_process
--standby`) started before its job, which imports torch and the training stack and then
waits for a job id on its stdin, so that the next job on its GPU skips those seconds. One
is started for each GPU when the worker starts, and the next one when a job starts on
that GPU (it imports while the job runs).

A standby is kept per GPU (one on a CPU worker), keyed by the GPU indices whose
CUDA_VISIBLE_DEVICES it was started with: importing bitsandbytes asks CUDA for its
devices, which fixes them for the process's life. Jobs on several GPUs start a new
process as before: their ranks, spawned by torch, import the stack anyway. Merges and
evaluations too (other modules)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from contextlib import suppress

from core.settings import get_settings
from worker.job_process import STANDBY_FLAG

log = logging.getLogger("ftsvc.worker")

TRAINING_MODULE = "worker.job_process"
# How long, at the worker's exit, a dismissed standby has to end on its own (one still
# importing ends once its imports are done) before it is killed: it holds no job.
EXIT_WAIT_SECONDS = 2.0

GpuKey = tuple[int, ...]


def wanted(module: str, gpus: int, worker_gpus: int) -> bool:
    """Whether a job of `module` on `gpus` GPUs runs in (and leaves behind) a standby,
    on a worker with `worker_gpus` GPUs (FTSVC_STANDBY_PROCESS)."""
    setting = get_settings().standby_process
    enabled = setting == "on" or (setting == "auto" and worker_gpus > 0)
    return enabled and module == TRAINING_MODULE and gpus <= 1


def hand_over(process: subprocess.Popen[bytes], job_id: str) -> bool:
    """Give the standby its job; False if it died meanwhile (then it is reaped)."""
    assert process.stdin is not None
    try:
        process.stdin.write(f"{job_id}\n".encode())
        process.stdin.close()
    except BrokenPipeError:
        process.wait()
        return False
    return True


def dismiss(process: subprocess.Popen[bytes]) -> None:
    """Tell a standby to end: EOF on its stdin, and a SIGTERM for one still importing."""
    assert process.stdin is not None
    with suppress(BrokenPipeError):
        process.stdin.close()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)


class Standbys:
    """A worker's waiting standbys, one per GPU key. Not locked: JobProcesses calls it
    under its own lock."""

    def __init__(self) -> None:
        self._waiting: dict[GpuKey, subprocess.Popen[bytes]] = {}
        self._dismissed: list[subprocess.Popen[bytes]] = []

    def take(self, key: GpuKey) -> subprocess.Popen[bytes] | None:
        """The standby started for exactly these GPUs, if it is alive; a dead one is dropped."""
        process = self._waiting.pop(key, None)
        if process is not None and process.poll() is not None:
            log.warning("standby process %d (GPUs %s) had exited: status %d", process.pid, key, process.returncode)
            return None
        return process

    def start(self, key: GpuKey, env: dict[str, str]) -> None:
        """A standby for these GPUs, unless a live one waits already. Returns at once: the
        imports happen in the new process."""
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.poll() is None:
            return
        command = [sys.executable, "-m", TRAINING_MODULE, STANDBY_FLAG]
        try:
            self._waiting[key] = subprocess.Popen(command, env=env, stdin=subprocess.PIPE)
        except OSError:  # the next job then starts a process of its own, as without standbys
            log.exception("a standby job process (GPUs %s) could not be started", key)

    def dismiss_all(self) -> list[subprocess.Popen[bytes]]:
        """The worker is stopping: every waiting standby is told to end. Returns all those
        dismissed so far, for `reap` at the worker's exit."""
        for process in self._waiting.values():
            dismiss(process)
        self._dismissed.extend(self._waiting.values())
        self._waiting.clear()
        return list(self._dismissed)


def reap(processes: list[subprocess.Popen[bytes]]) -> None:
    """At the worker's exit: wait for the dismissed standbys, killing those that take
    longer than EXIT_WAIT_SECONDS in all, so that none outlives the worker."""
    deadline = time.monotonic() + EXIT_WAIT_SECONDS
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
