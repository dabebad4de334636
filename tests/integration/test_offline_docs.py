"""/docs and /redoc work without internet: every script, style sheet and icon they load
comes from the API itself (the assets fastapi-offline ships), and, like before, they
need no API key."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_client

# Every URL a page loads: src= and href= attributes, and the spec Swagger UI fetches.
LOADED = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: '([^']+)'""")


@pytest.fixture(scope="module")
def anonymous() -> TestClient:
    with make_client(None) as client:
        yield client  # type: ignore[misc]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_pages_load_only_local_urls_and_need_no_key(anonymous: TestClient, page: str) -> None:
    response = anonymous.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    urls = [a or b for a, b in LOADED.findall(response.text)]
    assert len(urls) >= 3, response.text  # script, icon, spec (and Swagger UI's style sheet)
    assert "http:" not in response.text and "https:" not in response.text  # no CDN, no web fonts
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url}"
        loaded = anonymous.get(url)
        assert loaded.status_code == 200 and len(loaded.content) > 1000, (url, loaded.status_code)


def test_the_assets_are_the_real_swagger_ui_and_redoc(anonymous: TestClient) -> None:
    swagger = anonymous.get("/docs-assets/swagger-ui-bundle.js")
    assert swagger.headers["content-type"].startswith("text/javascript") and b"SwaggerUIBundle" in swagger.content
    assert b"Redoc" in anonymous.get("/docs-assets/redoc.standalone.js").content
    assert anonymous.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")
