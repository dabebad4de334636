"""What can make a training run fail for a reason a user can act on: each failure has
a code and says whether it is the user's to fix (their data, model or settings)."""

from __future__ import annotations


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


class CheckpointMissing(JobFailure):
    code = "checkpoint_not_found"
    user_error = True


class GpusUnavailable(JobFailure):
    """A multi-GPU job on a worker with fewer GPUs than it asks for."""

    code = "gpus_unavailable"
