"""Every error leaves the API as {"error": {"message", "type", "param", "code"}}: domain
errors, request validation (FastAPI's default 422 body is replaced), unknown routes,
outages of the database or the broker (503 with Retry-After), and unexpected failures,
which carry a reference id instead of a stack trace."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import ServiceError, ServiceUnavailable
from core.outages import MAYBE_OUTAGES, outage
from core.validation_errors import problems

log = logging.getLogger("ftsvc.api")
E = TypeVar("E", bound=Exception)


class ErrorObject(BaseModel):
    # Open to more fields: some errors carry what the client needs to act on them
    # (an upload's rejected `file` object, say).
    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None
    code: str | None
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """The body of every error answer, in OpenAI's shape."""

    error: ErrorObject


ERROR_MEANINGS = {
    400: "Invalid request: a parameter, the body or an uploaded file (`param` names the field)",
    401: "No API key, or an unknown or revoked one",
    403: "The organization's storage quota would be exceeded",
    404: "No such object in the organization, or an unknown `after` cursor",
    409: "The object's state does not allow this",
    413: "The upload is larger than the limit",
    422: "The Idempotency-Key was used before for a different request",
    429: "The organization already has its limit of queued or running jobs; for a completion, the inference "
    "server's queue is full",
    500: "An unexpected failure; the message carries a reference id to find in the server log",
    503: "The database, the job queue's broker or (completions) an inference server cannot be reached or take "
    "the request now (`code` says which); retry after the `Retry-After` header's seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the error body."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def _service_error(exc: ServiceError) -> JSONResponse:
    extra: dict[str, Any] = dict(exc.extra)
    if exc.details is not None:
        extra["details"] = exc.details
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(
        error_body(exc.message, exc.error_type, exc.param, exc.code, **extra),
        status_code=exc.status_code,
        headers=headers,
    )


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if errors[0].get("type") == "json_invalid":
        message, param = "The request body is not valid JSON", None
        details = [{"param": None, "message": message}]
    else:
        found = problems(list(errors), exc.body)
        param = found[0].param
        message = f"{param}: {found[0].message}" if param else found[0].message
        details = [{"param": p.param, "message": p.message} for p in found]
    return JSONResponse(
        error_body(message, "invalid_request_error", param, "invalid_request", details=details), status_code=400
    )


def _http_error(exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(str(exc.detail), "invalid_request_error", None, code),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _unexpected(exc: Exception) -> JSONResponse:
    reference = secrets.token_hex(8)
    log.error("unhandled error, reference %s", reference, exc_info=exc)
    return JSONResponse(
        error_body(f"Internal server error (reference {reference})", "server_error", None, "internal_error"),
        status_code=500,
    )


def _outage_or_unexpected(exc: Exception) -> JSONResponse:
    unavailable = outage(exc)
    if unavailable is None:
        return _unexpected(exc)
    log.warning("%s: %s", unavailable.code, exc)
    return _service_error(unavailable)


class AnswerUnexpectedErrors:
    """Answers an exception that no handler took with the standard 500 body, and ends
    there. Starlette's own ServerErrorMiddleware sends its 500 and then re-raises, and
    uvicorn closes the connection on an exception that reaches it: the client's next
    request on that kept-alive connection would fail too. Only an exception after the
    answer has begun goes on up: closing the connection is then the one way to tell the
    client that the body it got is incomplete."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if started:
                raise
            await _unexpected(exc)(scope, receive, send)


def _handler(
    kind: type[E], respond: Callable[[E], JSONResponse]
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's handler for exceptions of `kind` (async: answered on the event loop)."""

    async def handle(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, kind), exc  # Starlette calls a handler only for its class
        return respond(exc)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _handler(ServiceError, _service_error))
    app.add_exception_handler(RequestValidationError, _handler(RequestValidationError, _validation_error))
    app.add_exception_handler(HTTPException, _handler(HTTPException, _http_error))
    for kind in MAYBE_OUTAGES:
        app.add_exception_handler(kind, _handler(kind, _outage_or_unexpected))
    app.add_middleware(AnswerUnexpectedErrors)
