"""The options every client command takes: where the server is, the API key, and how to
print the answer."""

from __future__ import annotations

from typing import Annotated

import typer

from ftsvc.client.api import Api
from ftsvc.client.connection import connection

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="The API's base URL (default: FTSVC_BASE_URL, the config file's base_url, http://127.0.0.1:8000/v1)",
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="An API key, ftsk-... (default: FTSVC_API_KEY, the config file's api_key, the embedded service's "
        "var/local-api-key)",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print the new object's id only")]


def connect(base_url: str | None, api_key: str | None) -> Api:
    return Api(connection(base_url, api_key))
