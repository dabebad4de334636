"""The dashboard: a web page at `/` that shows the organization's jobs (live loss
curves, logs, checkpoints and downloads) and has forms to upload data and create jobs.

It is static files only (HTML, CSS and JavaScript modules under `static/`, shipped in
the package), so it works offline and costs the API nothing but file reads. The page
and its assets hold no data and need no key; the page asks for an API key and sends it
on every call it makes to /v1, like any other client. Neither appears in /openapi.json:
they are not part of the API."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"
# Where the assets are served; the page refers to them relative to itself, so a proxy
# may serve the whole service under a prefix.
ASSETS_PATH = "/dashboard"

# The page loads and calls nothing but this service: no CDN, no inline script (the key
# it holds must not be readable by injected code), no framing by other sites.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class _Assets(StaticFiles):
    """The assets, revalidated on every load (ETag: an unchanged file answers 304), so a
    browser never runs yesterday's script against today's API after an upgrade."""

    def file_response(
        self, full_path: os.PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


async def page(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS | {"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """`/` and the assets, outside the API: no key, no API dependencies (a page opened
    with a tracking query string must still load), not in /openapi.json."""
    app.add_route("/", page, include_in_schema=False)
    app.mount(ASSETS_PATH, _Assets(directory=STATIC), name="dashboard")
