"""Where a training run reports to, as the recipe sees it: a protocol the job's record
implements (worker.job_reporter) and a console reporter for runs outside a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from core.states import Level, StopReason


class EventLog(Protocol):
    """Where a worker's events go (a job's log, a merge's log, the console)."""

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None: ...


class Reporter(Protocol):
    """Where a training run reports to: the job's record, or the console."""

    # Whether the run saves checkpoints (a job does; a benchmark run does not).
    saves_checkpoints: bool

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None: ...

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None: ...

    def runtime(self, description: dict[str, Any]) -> None:
        """What the run runs with (device, dtype, speed settings, library versions)."""

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None: ...

    def progress(self, step: int, total_steps: int, epochs: int, seconds_per_step: float | None) -> None:
        """Where training is: optimizer steps done and in all, the epochs the trainer
        runs, and the mean step time measured (None before the first step)."""

    def stop_reason(self) -> StopReason | None:
        """Checked after every optimizer step."""


class ConsoleReporter:
    """The reporter's interface without a database: prints events and metrics, never
    stops or checkpoints. For runs of the recipe outside a job (benchmarks, experiments)."""

    saves_checkpoints = False

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.metrics: list[tuple[int, dict[str, Any]]] = []

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        print(f"{self.prefix}[{level}] {message}", flush=True)

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        self.metrics.append((step, {"split": split, **values}))

    def runtime(self, description: dict[str, Any]) -> None:
        print(f"{self.prefix}[runtime] {description}", flush=True)

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None:
        return None

    def progress(self, step: int, total_steps: int, epochs: int, seconds_per_step: float | None) -> None:
        return None

    def stop_reason(self) -> StopReason | None:
        return None


class OtherRankReporter:
    """The reporter of a multi-GPU job's ranks other than 0 (worker.training.distributed):
    rank 0 reports for all of them, so this one says nothing; it saves checkpoints as
    rank 0 does (each rank writes its RNG state into them), and follows rank 0's stop."""

    saves_checkpoints = True

    def event(self, message: str, level: Level = "info", data: dict[str, Any] | None = None) -> None:
        return None

    def metric(self, step: int, values: dict[str, Any], split: str = "train") -> None:
        return None

    def runtime(self, description: dict[str, Any]) -> None:
        return None

    def checkpoint(self, step: int, directory: Path, metrics: dict[str, Any]) -> None:
        return None

    def progress(self, step: int, total_steps: int, epochs: int, seconds_per_step: float | None) -> None:
        return None

    def stop_reason(self) -> StopReason | None:
        return None
