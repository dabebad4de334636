"""What /openapi.json says beyond what FastAPI derives from the routes: the bodies of
successful answers (from the route functions' return annotations, without FastAPI's
response validation: ModelRoute), of downloads and event streams, and no 422 of
FastAPI's own (validation errors are 400)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi import FastAPI, Response
from fastapi.datastructures import Default, DefaultPlaceholder
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from pydantic import BaseModel

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
    """`responses=` for a route whose 200 is a body that is not JSON: a download, a picture,
    or Server-Sent Events (text/event-stream). The route also takes the Response class it
    returns as `response_class` (StreamingResponse for streams), so that FastAPI documents
    no JSON body for its 200 and keeps its error answers JSON."""
    body = (
        {"itemSchema": SSE_EVENT}
        if media_type == "text/event-stream"
        else {"schema": {"type": "string", "format": "binary"}}
    )
    return {200: {"description": description, "content": {media_type: body}}}


# Models that only the items of event streams name: FastAPI puts in components/schemas
# only the models of bodies, so DocumentedApp adds these.
STREAM_ITEM_MODELS: dict[str, type[BaseModel]] = {}


def streamed_chunks(chunk: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers JSON (its return annotation) or, when asked,
    Server-Sent Events whose data is each a `chunk` as JSON, the last `[DONE]`."""
    STREAM_ITEM_MODELS[chunk.__name__] = chunk
    data = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": f"#/components/schemas/{chunk.__name__}"},
        "description": f"A {chunk.__name__} as JSON; the last event's data is `[DONE]`",
    }
    item = SSE_EVENT | {"properties": SSE_EVENT["properties"] | {"data": data}}  # type: ignore[operator]
    return {200: {"description": description, "content": {"text/event-stream": {"itemSchema": item}}}}


class DocumentedApp(FastAPI):
    """FastAPI whose /openapi.json leaves out FastAPI's own 422: it documents one with its
    own body on every route that has parameters, and this API never sends it
    (api.error_responses answers validation errors with 400 in the error shape). A 422
    declared with the error body (a reused Idempotency-Key) stays."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        for operations in schema["paths"].values():
            for operation in operations.values():
                declared = operation["responses"].get("422", {}).get("content", {}).get("application/json", {})
                if declared.get("schema") == FASTAPI_VALIDATION_ERROR:
                    del operation["responses"]["422"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in STREAM_ITEM_MODELS.values():
            item = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            for name, definition in item.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, item)
        return schema


def documented_model(endpoint: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model a route function's return annotation names: `-> JobObject`,
    or `-> JobObject | Response` for a route that sometimes answers with a Response of
    its own (an idempotent replay). None for a route that returns only Responses
    (downloads, streams)."""
    annotation = get_typed_return_annotation(endpoint)
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    models = [t for t in options if not (isinstance(t, type) and issubclass(t, Response))]
    if not models:
        return None
    if len(models) == 1 and isinstance(models[0], type) and issubclass(models[0], BaseModel):
        return models[0]
    name = getattr(endpoint, "__qualname__", endpoint)
    raise TypeError(f"{name} must be annotated to return a pydantic model (or a Response), not {annotation!r}")


def _send(result: object, status_code: int) -> object:
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), status_code=status_code, media_type="application/json")
    return result


def _sending_json(endpoint: Callable[..., Any], status_code: int) -> Callable[..., Any]:
    """The endpoint, returning its model as JSON bytes in a Response. Sync stays sync
    (the model is serialized in the worker thread the route already runs in), async
    stays async; FastAPI reads the parameters through `__wrapped__`."""
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def send_async(*args: Any, **kwargs: Any) -> object:
            return _send(await endpoint(*args, **kwargs), status_code)

        return send_async

    @functools.wraps(endpoint)
    def send(*args: Any, **kwargs: Any) -> object:
        return _send(endpoint(*args, **kwargs), status_code)

    return send


class ModelRoute(APIRoute):
    """A route whose return annotation (a pydantic model, api.schemas) is the documented
    body of its 200, and whose returned model is sent as its `model_dump_json()`.

    FastAPI would use the annotation as `response_model` and validate the returned value
    against it again, for a sync route in a worker thread after the route returned, while
    the request still holds its database connection: under load every thread can then be
    waiting for a connection and the API deadlocks (fastapi#3205). So the model is
    documented through `responses` (which describes a body without validating it), the
    `response_model` stays None, and the endpoint itself returns the serialized Response,
    with no hop after it returns. The models are validated once, when built from rows."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        declared = kwargs.get("response_model", Default(None))
        model = documented_model(endpoint) if isinstance(declared, DefaultPlaceholder) else declared
        if model is not None:
            status_code = kwargs.get("status_code") or 200
            responses = dict(kwargs.get("responses") or {})
            responses[status_code] = {**responses.get(status_code, {}), "model": model}
            kwargs["responses"] = responses
            endpoint = _sending_json(endpoint, status_code)
        kwargs["response_model"] = None
        super().__init__(path, endpoint, **kwargs)
