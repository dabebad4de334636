"""Why a job failed, in the words a user needs: each failure has a code and says
whether the user can fix it (their data, their model, their settings) or we must."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ServiceError


class JobFailure(Exception):
    code = "internal_error"
    user_error = False

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


class ModelLoadError(JobFailure):
    code = "model_load_failed"
    user_error = True


class DataError(JobFailure):
    code = "invalid_training_data"
    user_error = True


@dataclass
class FailureReport:
    code: str
    message: str
    param: str | None
    user_error: bool

    def as_error(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "param": self.param}


def classify(exc: BaseException) -> FailureReport:
    if isinstance(exc, JobFailure):
        return FailureReport(exc.code, exc.message, exc.param, exc.user_error)
    if isinstance(exc, ServiceError):  # a domain check that failed while training
        return FailureReport(exc.code, exc.message, exc.param, True)
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return FailureReport(
            "out_of_memory",
            "Training ran out of memory; lower batch_size or max_seq_length, or use a larger machine",
            "method.supervised.hyperparameters.batch_size",
            True,
        )
    return FailureReport("internal_error", f"Internal error during training ({type(exc).__name__}: {exc})", None, False)
