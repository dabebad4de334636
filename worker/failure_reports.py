"""Why a job failed, in the words a user needs: any exception of a run as a report with
a code, a message that says which phase failed (loading, training, publishing) and
where training was, the parameter to fix, and whether the user can fix it (their data,
their model, their settings) or we must."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from core.errors import ServiceError
from worker.training.failures import JobFailure

# loading: model, tokenizer, data, checkpoint, quantization; training: the trainer's
# steps (and checkpoints); publishing: writing the adapter and results to storage.
Phase = Literal["loading", "training", "publishing"]


@dataclass
class FailureReport:
    code: str
    message: str
    param: str | None
    user_error: bool
    phase: Phase
    exception: str | None = None

    def as_error(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}

    def details(self) -> dict[str, object]:
        """For the failure's event: the error, the phase, whose fault, and the exception
        behind it. These failures are final: retrying the same data, model or memory
        fails again."""
        return self.as_error() | {
            "phase": self.phase,
            "user_error": self.user_error,
            "exception": self.exception,
            "retried": False,
        }


def phase_said(phase: Phase, step: int) -> str:
    if phase == "loading":
        return "Loading failed"
    if phase == "training":
        return f"Training failed at step {step}"
    return f"Training finished ({step} steps) but publishing its adapter to storage failed"


def classify(exc: BaseException, phase: Phase, step: int) -> FailureReport:
    """`step`: the last step training finished."""
    cause = exc.__cause__ or exc
    exception = f"{type(cause).__name__}: {cause}"[:2000]
    said = phase_said(phase, step)
    if isinstance(exc, JobFailure):
        return FailureReport(exc.code, f"{said}: {exc.message}", exc.param, exc.user_error, phase, exception)
    if isinstance(exc, ServiceError):  # a domain check that failed while training
        return FailureReport(exc.code, f"{said}: {exc.message}", exc.param, True, phase, exception)
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return FailureReport(
            "out_of_memory",
            f"{said}: out of memory; lower batch_size or max_seq_length, or use a larger machine",
            "method.supervised.hyperparameters.batch_size",
            True,
            phase,
            exception,
        )
    return FailureReport(f"{phase}_failed", f"{said} ({type(exc).__name__}: {exc})", None, False, phase, exception)


def leave_report(workdir: Path, rank: int, failure: FailureReport) -> None:
    """A failed rank's report, for the job process that records it (worker.ranks)."""
    (workdir / f"failure-rank-{rank}.json").write_text(json.dumps(asdict(failure)))


def left_report(workdir: Path, rank: int) -> FailureReport | None:
    """The report the rank left, if it could (a rank that was killed leaves none)."""
    path = workdir / f"failure-rank-{rank}.json"
    return FailureReport(**json.loads(path.read_text())) if path.is_file() else None
