"""A multi-GPU job's launch on a host that cannot give it its GPUs, and the failure a rank
leaves for the job process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from core.settings import get_settings
from worker.failure_reports import FailureReport, leave_report, left_report
from worker.ranks import _rank_environment
from worker.training.failures import GpusUnavailable

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU host's refusal")


@pytest.fixture
def cpu_ranks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    def allow(allowed: bool) -> None:
        monkeypatch.setenv("FTSVC_CPU_RANKS", "1" if allowed else "0")
        get_settings.cache_clear()

    yield allow
    monkeypatch.undo()
    get_settings.cache_clear()


def test_without_a_gpu_ranks_train_on_the_cpu_only_when_allowed(cpu_ranks: Callable[[bool], None]) -> None:
    cpu_ranks(False)
    with pytest.raises(GpusUnavailable) as refused:
        _rank_environment(2)
    assert refused.value.param == "qlora.resources.gpus" and refused.value.code == "gpus_unavailable"
    assert "asks for 2 GPUs (qlora.resources.gpus)" in refused.value.message
    assert "has no GPU (FTSVC_CPU_RANKS" in refused.value.message
    cpu_ranks(True)
    environment = _rank_environment(2)
    assert environment["WORLD_SIZE"] == "2" and environment["MASTER_ADDR"] == "127.0.0.1"
    assert 0 < int(environment["MASTER_PORT"]) < 65536 and "CUDA_VISIBLE_DEVICES" not in environment


def test_a_ranks_failure_report_reaches_the_job_process_intact(tmp_path: Path) -> None:
    report = FailureReport("out_of_memory", "Training failed at step 3: out of memory", "x", True, "training", "E")
    assert left_report(tmp_path, 1) is None  # a killed rank leaves none
    leave_report(tmp_path, 1, report)
    assert left_report(tmp_path, 1) == report and left_report(tmp_path, 0) is None
