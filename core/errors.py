"""Domain errors. The API turns each into `{"error": {message, type, param, code}}`
with its status; the worker records them on the job."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.details = details
        self.extra = extra or {}


class InvalidRequest(ServiceError):
    pass


class NotFound(ServiceError):
    status_code = 404
    default_code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    default_code = "conflict"


class Unauthorized(ServiceError):
    status_code = 401
    default_code = "invalid_api_key"


class StorageQuotaExceeded(ServiceError):
    status_code = 403
    default_code = "storage_quota_exceeded"


class ActiveJobsQuotaExceeded(ServiceError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "active_jobs_quota_exceeded"


class PayloadTooLarge(ServiceError):
    status_code = 413
    default_code = "file_too_large"


class IdempotencyKeyReused(ServiceError):
    status_code = 422
    default_code = "idempotency_key_reused"


class ServiceUnavailable(ServiceError):
    """A dependency (the database, the broker) cannot be reached: the request may
    succeed unchanged once it is back, `retry_after` seconds from now or later."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"
    retry_after = 5


class PreflightUnavailable(ServiceUnavailable):
    """No pre-flight worker answered in time (none running, or all busy)."""

    default_code = "preflight_unavailable"


class InferenceBusy(ServiceError):
    """An inference server's queue is full: retry later."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "inference_queue_full"


class InferenceUnavailable(ServiceUnavailable):
    """No live inference server, or none could take the request in time."""

    default_code = "inference_unavailable"
