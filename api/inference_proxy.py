"""The API's side of generation: an inference server is picked (a live one, preferring
one that holds the base already), sent the request (core.inference's protocol), and its
events read as they come. Its refusals pass through as they are (400, 404, 429, 503);
no live server, or none that answers, is 503. Closing the events closes the connection,
which stops the generation there."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from starlette.concurrency import run_in_threadpool

from core import inference_servers, inference_targets
from core.db import read_scope
from core.errors import InferenceUnavailable, ServiceError, ServiceUnavailable
from core.inference import GenerateEvent, GenerateRequest, Target
from core.settings import get_settings

log = logging.getLogger("ftsvc.api")
CONNECT_SECONDS = 5.0


def _resolve(org_id: str, model: str) -> tuple[Target, list[str]]:
    with read_scope() as session:
        target = inference_targets.resolve(session, org_id, model)
        return target, inference_servers.candidates(session, target.base_key)


def passed_through(status: int, error: dict[str, Any]) -> ServiceError:
    """An inference server's error (its status and error object), as the API answers it."""
    kind = ServiceUnavailable if status == 503 else ServiceError
    extra = {k: v for k, v in error.items() if k not in ("message", "type", "param", "code")}
    passed = kind(str(error.get("message")), param=error.get("param"), code=error.get("code"), extra=extra)
    passed.status_code, passed.error_type = status, str(error.get("type") or passed.error_type)
    return passed


def _refusal(status: int, body: bytes) -> ServiceError:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return InferenceUnavailable(f"The inference server answered {status} without an error body")
    return passed_through(status, error)


@dataclass
class Generation:
    """An inference server's answer under way: its events after `start`."""

    client: httpx.AsyncClient
    response: httpx.Response
    lines: AsyncIterator[str]
    prompt_tokens: int

    async def events(self) -> AsyncGenerator[GenerateEvent]:
        try:
            async for line in self.lines:
                if line:
                    yield GenerateEvent.model_validate_json(line)
        finally:
            await self.close()

    async def close(self) -> None:
        # Shielded: a client that left cancels the stream, and this is what tells the
        # inference server to stop.
        with anyio.CancelScope(shield=True):
            await self.response.aclose()
            await self.client.aclose()


async def start(org_id: str, model: str, request: GenerateRequest) -> Generation:
    """Resolve `model` for the organization (`request.target` is set here) and start the
    generation on an inference server: once this returns, it runs."""
    target, urls = await run_in_threadpool(_resolve, org_id, model)
    request.target = target
    if not urls:
        raise InferenceUnavailable("No inference server is running (start one with `ftsvc inference`)")
    timeout = httpx.Timeout(get_settings().inference_read_timeout_seconds, connect=CONNECT_SECONDS)
    client = httpx.AsyncClient(timeout=timeout)
    try:
        for url in urls:
            try:
                sent = client.build_request("POST", f"{url}/internal/generate", json=request.model_dump(mode="json"))
                response = await client.send(sent, stream=True)
            except httpx.TransportError as exc:  # gone since its last heartbeat: the next one
                log.warning("inference server %s: %s", url, exc)
                continue
            if response.status_code != 200:
                body = await response.aread()
                await response.aclose()
                raise _refusal(response.status_code, body)
            lines = response.aiter_lines()
            first = GenerateEvent.model_validate_json(await anext(lines))
            return Generation(client, response, lines, first.prompt_tokens)
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    raise InferenceUnavailable("No inference server answered; retry later")
