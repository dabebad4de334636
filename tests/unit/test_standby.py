"""Standby job processes. The worker's side (worker.standbys): which jobs run in one.
The standby's side (worker.job_process --standby): it waits for a job id on stdin, ends
quietly at EOF or on a stop, and a job id already handed over wins over a stop that
follows it (the run then gives the job back, as a stopped run does)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import psutil
import pytest

from tests.conftest import ROOT
from tests.faults.test_worker_faults import wait_until
from tests.helpers import changed_settings
from worker.job_process import STANDBY_FLAG, await_job, stop_on_signals
from worker.standbys import TRAINING_MODULE, Standbys, hand_over, reap, wanted


@pytest.mark.parametrize(
    ("setting", "worker_gpus", "expected"),
    [("auto", 2, True), ("auto", 0, False), ("on", 0, True), ("off", 2, False)],
)
def test_the_setting_and_the_worker_s_gpus_decide(setting: str, worker_gpus: int, expected: bool) -> None:
    with changed_settings(FTSVC_STANDBY_PROCESS=setting):
        assert wanted(TRAINING_MODULE, 1, worker_gpus) is expected


def test_jobs_on_several_gpus_merges_and_evaluations_start_new_processes() -> None:
    with changed_settings(FTSVC_STANDBY_PROCESS="on"):
        assert not wanted(TRAINING_MODULE, 2, 2)
        assert not wanted("worker.merge_process", 1, 2)
        assert not wanted("worker.evaluation_process", 1, 2)


def test_a_standby_that_died_is_dropped_and_the_next_one_is_new() -> None:
    """Real standby processes, killed during their imports (no job runs)."""
    standbys, key, env = Standbys(), (0,), dict(os.environ)
    standbys.start(key, env)
    [dead] = [p for p in psutil.Process().children() if STANDBY_FLAG in p.cmdline()]
    dead.kill()
    wait_until(lambda: dead.status() == psutil.STATUS_ZOMBIE, 10, "the standby to die")
    assert standbys.take(key) is None  # the job then starts a process of its own

    standbys.start(key, env)
    replaced = standbys.take(key)
    assert replaced is not None and replaced.poll() is None and replaced.pid != dead.pid
    replaced.kill()
    replaced.wait()
    assert not hand_over(replaced, "ftjob-abc")  # one that dies between take and handover


def test_dismissed_standbys_are_gone_once_reaped() -> None:
    standbys, env = Standbys(), dict(os.environ)
    standbys.start((0,), env)
    standbys.start((1,), env)
    dismissed = standbys.dismiss_all()
    reap(dismissed)
    assert len(dismissed) == 2 and all(process.poll() is not None for process in dismissed)
    assert standbys.take((0,)) is None


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.FileIO]:
    """A pipe in place of this process's stdin; yields its writing end, as the worker holds it."""
    read_end, write_end = os.pipe()
    reader = os.fdopen(read_end, "r")
    monkeypatch.setattr(sys, "stdin", reader)
    with os.fdopen(write_end, "wb", buffering=0) as writer:
        yield writer
    reader.close()


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """The job process's own signal handling, the test runner's restored afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield stop_on_signals()
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_the_job_id_on_stdin_is_the_job(stdin: io.FileIO, stop: threading.Event) -> None:
    stdin.write(b"ftjob-abc\n")
    stdin.close()
    assert await_job(stop) == "ftjob-abc"


def test_eof_without_a_job_id_is_no_job(stdin: io.FileIO, stop: threading.Event) -> None:
    stdin.close()
    assert await_job(stop) is None


def test_a_sigterm_while_waiting_ends_the_wait(stdin: io.FileIO, stop: threading.Event) -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    assert await_job(stop) is None  # the write end stays open: only the signal ends the wait
    assert stop.is_set()
    timer.join()


def test_a_job_handed_over_before_the_stop_still_runs(stdin: io.FileIO, stop: threading.Event) -> None:
    stdin.write(b"ftjob-abc\n")
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.is_set()
    assert await_job(stop) == "ftjob-abc"


def test_a_standby_told_to_end_exits_quietly() -> None:
    """The whole process: its imports, then EOF on stdin (the worker stopping)."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.job_process", STANDBY_FLAG],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr
