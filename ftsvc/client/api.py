"""The service's HTTP API as the client commands use it (httpx): JSON in and out, error
answers as ApiError (the server's message, code and param), a server that cannot be
reached as Unreachable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from ftsvc.client.connection import Connection
from ftsvc.client.errors import ApiError, Unreachable

# Connecting is quick or the server is not there; an answer may take a while (an upload
# is validated before the answer, a preview waits for a pre-flight worker).
TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def endpoint(*segments: str) -> str:
    """An API path from its segments, ids included as they were typed (a '/' or '?' in
    one cannot reach another route)."""
    return "/".join(quote(segment, safe="") for segment in segments)


class Api:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.http = httpx.Client(
            base_url=connection.base_url,
            headers={"Authorization": f"Bearer {connection.api_key}", "User-Agent": "ftsvc-cli"},
            timeout=TIMEOUT,
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.reaching():
            response = self.http.request(method, path, **kwargs)
        self.check(response)
        return response.json()

    @contextmanager
    def stream(self, path: str, method: str = "GET", **kwargs: Any) -> Iterator[httpx.Response]:
        """A request whose answer is read as it arrives (downloads, event streams); an
        error answer raises."""
        with self.reaching(), self.http.stream(method, path, **kwargs) as response:
            if response.is_error:
                response.read()
                self.check(response)
            yield response

    @contextmanager
    def reaching(self) -> Iterator[None]:
        """Turns the transport's failures (no server, a timeout, a connection cut off)
        into one line that names the server."""
        try:
            yield
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(
                f"cannot reach the server at {self.connection.base_url} ({reason}); is it running? "
                "(--base-url or FTSVC_BASE_URL names another)"
            ) from exc

    def check(self, response: httpx.Response) -> None:
        """An error answer as ApiError, with what its body says; a refused key names
        where the key came from."""
        if response.is_error:
            hint = f"the key came from {self.connection.key_source}" if response.status_code == 401 else None
            raise ApiError(response.status_code, error_object(response), hint)


def error_object(response: httpx.Response) -> dict[str, Any]:
    """The `error` of an error answer; what a body that is not the API's (a proxy's
    page, say) begins with."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    snippet = " ".join(response.text.split())[:200]
    return {"message": f"{response.reason_phrase}: {snippet}" if snippet else response.reason_phrase}
