"""A worker's GPUs (worker.job_processes.GpuPool), with real threads: each held by one job
at a time, a job asking for several gets them together and in its turn, and a stop
ends the wait."""

from __future__ import annotations

import threading
import time

import pytest

from worker.job_processes import GpuPool, WorkerStopping


def test_no_gpu_is_held_twice_and_a_larger_request_is_not_overtaken() -> None:
    pool = GpuPool()
    pool.configure([0, 1])
    order: list[tuple[str, list[int]]] = []
    first = pool.held(1)
    assert first.__enter__() == [0]

    def take(name: str, count: int) -> None:
        with pool.held(count) as taken:
            order.append((name, taken))
            time.sleep(0.2)

    pair = threading.Thread(target=take, args=("pair", 2))
    pair.start()
    time.sleep(0.2)  # the pair waits for GPU 0; a single one asking now must wait behind it
    single = threading.Thread(target=take, args=("single", 1))
    single.start()
    time.sleep(0.3)
    assert order == []  # GPU 1 is free, but the pair asked first
    first.__exit__(None, None, None)
    pair.join()
    single.join()
    assert order == [("pair", [0, 1]), ("single", [0])]


def test_a_stop_ends_the_wait_and_a_cpu_worker_hands_out_nothing() -> None:
    pool = GpuPool()
    pool.configure([3])
    stopping = threading.Event()
    with pool.held(1) as taken:
        assert taken == [3]
        threading.Timer(0.3, stopping.set).start()
        with pytest.raises(WorkerStopping), pool.held(1, stopping.is_set):
            pass
    with pool.held(1) as again:  # the abandoned request left no turn behind
        assert again == [3]
    with pytest.raises(ValueError, match="asked for 2 GPUs; this worker has 1"), pool.held(2):
        pass
    with GpuPool().held(4) as none:
        assert none == []
