"""What /openapi.json says beyond what FastAPI derives from the routes: the bodies of
downloads and event streams, and no 422 of FastAPI's own (validation errors are 400)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

FASTAPI_VALIDATION_ERROR = {"$ref": "#/components/schemas/HTTPValidationError"}
# One Server-Sent Event, as OpenAPI 3.2's `itemSchema` describes the items of a stream
# (and as FastAPI documents its own event streams).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


def streamed(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route whose 200 streams a body that is not JSON: a download, or
    Server-Sent Events (text/event-stream). The route also takes
    `response_class=StreamingResponse`, so that FastAPI documents no JSON body for its 200
    and keeps its error answers JSON."""
    body = (
        {"itemSchema": SSE_EVENT}
        if media_type == "text/event-stream"
        else {"schema": {"type": "string", "format": "binary"}}
    )
    return {200: {"description": description, "content": {media_type: body}}}


def drop_fastapi_422(app: FastAPI) -> None:
    """FastAPI documents a 422 with its own body on every route that has parameters; this
    API never sends it (api.error_responses answers validation errors with 400 in the error shape),
    so it is taken out of the generated document. A 422 declared with the error body
    (a reused Idempotency-Key) stays."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            for operations in schema["paths"].values():
                for operation in operations.values():
                    declared = operation["responses"].get("422", {}).get("content", {}).get("application/json", {})
                    if declared.get("schema") == FASTAPI_VALIDATION_ERROR:
                        del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class PlainRoute(APIRoute):
    """A route whose return value (a dict built by api.serializers) is sent as is.
    FastAPI would otherwise re-validate it against the `dict[str, Any]` annotation in a
    worker thread after a sync route returns, while the request still holds its
    database connection; under load every thread can then be waiting for a connection
    and the API deadlocks (fastapi#3205)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        kwargs["response_model"] = None
        super().__init__(path, endpoint, **kwargs)
