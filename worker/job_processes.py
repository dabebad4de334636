"""The Celery worker's side of running jobs: each job in a process of its own
(`python -m worker.job_process`, or a standby of it started ahead: worker.standbys), so
the worker itself never imports torch and every job's GPU and host memory is returned
in full when its process exits; the GPUs each process is given, to it alone; and the
stop of those processes when the worker shuts down."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from worker import standbys

log = logging.getLogger("ftsvc.worker")


def job_env(indices: Sequence[int]) -> dict[str, str]:
    """A job process's environment: the worker's, and the GPUs it may use (numbered as
    nvidia-smi does)."""
    env = os.environ.copy()
    if indices:
        env |= {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, indices))}
    return env


class WorkerStopping(Exception):
    """The worker began to stop before the job got its GPUs: it was not started."""


class GpuPool:
    """The worker's GPUs, each held by one job process at a time. A job asking for N
    takes N at once when N are free; requests are served in their order, so a job
    waiting for several GPUs is not overtaken forever by single-GPU ones."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._size = 0
        self._indices: tuple[int, ...] = ()
        self._turns: collections.deque[object] = collections.deque()
        self._changed = threading.Condition()

    def configure(self, indices: Sequence[int]) -> None:
        with self._changed:
            self._free, self._size = list(indices), len(indices)
            self._indices = tuple(indices)

    @property
    def size(self) -> int:
        return self._size

    @property
    def indices(self) -> tuple[int, ...]:
        """All of the worker's GPUs, held or free."""
        return self._indices

    @contextmanager
    def held(self, count: int, stopping: Callable[[], bool] = lambda: False) -> Iterator[list[int]]:
        """`count` free GPUs, held until the block ends; none on a worker without GPUs.
        Raises WorkerStopping if `stopping()` turns true while it waits."""
        if not self._size:
            yield []
            return
        if count > self._size:
            raise ValueError(f"asked for {count} GPUs; this worker has {self._size}")
        turn = object()
        with self._changed:
            self._turns.append(turn)
            while not (self._turns[0] is turn and len(self._free) >= count):
                if stopping():
                    self._turns.remove(turn)
                    self._changed.notify_all()
                    raise WorkerStopping
                self._changed.wait(timeout=0.5)
            self._turns.popleft()
            taken, self._free = self._free[:count], self._free[count:]
            self._changed.notify_all()
        try:
            yield taken
        finally:
            with self._changed:
                self._free = sorted(self._free + taken)
                self._changed.notify_all()


class JobProcesses:
    """The job processes this worker runs (one per pool thread; a GPU worker has a
    thread per GPU), and the standby processes waiting for the next training job
    (worker.standbys). `stop` asks each job process to checkpoint and give its job back;
    one still running `grace` seconds later is killed, and its job is left to the lease
    reaper. `close`, at the worker's exit, ends the standbys."""

    def __init__(self) -> None:
        self.gpus = GpuPool()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._standbys = standbys.Standbys()
        self._lock = threading.Lock()
        self._deadline: float | None = None

    def run(self, job_id: str, module: str = standbys.TRAINING_MODULE, gpus: int = 1) -> int:
        """Run the job's process (`python -m <module> <job_id>`; a merge's is
        worker.merge_process) to its end on `gpus` GPUs of its own (CUDA_VISIBLE_DEVICES,
        numbered as nvidia-smi does; waiting for them if other jobs hold them); returns
        its exit status. A training job on one GPU (or on the CPU) goes to the standby
        waiting for its GPU when there is one, and starts the next one.
        Raises WorkerStopping if the worker stops while the job waits."""
        with self.gpus.held(gpus, stopping=lambda: self._deadline is not None) as indices:
            env = job_env(indices)
            command = [sys.executable, "-m", module, job_id]
            if not standbys.wanted(module, gpus, self.gpus.size):
                return self._run(job_id, subprocess.Popen(command, env=env))
            key = tuple(indices)
            process = self._handed_over(key, job_id) or subprocess.Popen(command, env=env)
            # The next job's standby imports while this job runs, so that a job queued
            # behind this one finds it ready; one that died meanwhile is replaced at the end.
            self._start_standby(key, env)
            try:
                return self._run(job_id, process)
            finally:
                self._start_standby(key, env)

    def prewarm(self) -> None:
        """At the worker's start: a standby for each of its GPUs (the CPU's, on a worker
        without GPUs, where standbys are on), so that its first jobs skip the imports too."""
        keys: list[standbys.GpuKey] = [(index,) for index in self.gpus.indices] or [()]
        for key in keys:
            if standbys.wanted(standbys.TRAINING_MODULE, len(key), self.gpus.size):
                self._start_standby(key, job_env(key))

    def _start_standby(self, key: standbys.GpuKey, env: dict[str, str]) -> None:
        with self._lock:
            if self._deadline is None:
                self._standbys.start(key, env)

    def _handed_over(self, key: standbys.GpuKey, job_id: str) -> subprocess.Popen[bytes] | None:
        with self._lock:
            process = self._standbys.take(key)
        if process is None or not standbys.hand_over(process, job_id):
            return None
        log.info("job %s: handed to standby process %d", job_id, process.pid)
        return process

    def _run(self, job_id: str, process: subprocess.Popen[bytes]) -> int:
        with self._lock:
            self._running.add(process)
            stopping = self._deadline is not None
        if stopping:  # the worker began to stop while this job was being handed over
            process.send_signal(signal.SIGTERM)
        try:
            return self._wait(process, job_id)
        finally:
            with self._lock:
                self._running.discard(process)

    def _wait(self, process: subprocess.Popen[bytes], job_id: str) -> int:
        while True:
            try:
                return process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    log.warning("job %s: its process did not stop within the grace period; killed", job_id)
                    process.kill()

    def stop(self, grace: float) -> None:
        """Called from the worker's signal handler: only flags and signals, no waiting."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic() + grace
            running = list(self._running)
            self._standbys.dismiss_all()
        for process in running:
            process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """At the worker's exit, once its jobs ended: no standby outlives it."""
        with self._lock:
            if self._deadline is None:
                self._deadline = time.monotonic()
            dismissed = self._standbys.dismiss_all()
        standbys.reap(dismissed)


job_processes = JobProcesses()
