"""Why a job failed, in the words a user needs: any exception of a run as a report with
a code, a message, the parameter to fix, and whether the user can fix it (their data,
their model, their settings) or we must."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ServiceError
from worker.training.failures import JobFailure


@dataclass
class FailureReport:
    code: str
    message: str
    param: str | None
    user_error: bool
    exception: str | None = None

    def as_error(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}

    def details(self) -> dict[str, object]:
        """For the failure's event: the error, whose fault, and the exception behind it.
        These failures are final: retrying the same data, model or memory fails again."""
        return self.as_error() | {"user_error": self.user_error, "exception": self.exception, "retried": False}


def classify(exc: BaseException) -> FailureReport:
    cause = exc.__cause__ or exc
    exception = f"{type(cause).__name__}: {cause}"[:2000]
    if isinstance(exc, JobFailure):
        return FailureReport(exc.code, exc.message, exc.param, exc.user_error, exception)
    if isinstance(exc, ServiceError):  # a domain check that failed while training
        return FailureReport(exc.code, exc.message, exc.param, True, exception)
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return FailureReport(
            "out_of_memory",
            "Training ran out of memory; lower batch_size or max_seq_length, or use a larger machine",
            "method.supervised.hyperparameters.batch_size",
            True,
            exception,
        )
    return FailureReport(
        "internal_error", f"Internal error during training ({type(exc).__name__}: {exc})", None, False, exception
    )
