"""The dashboard's page and assets, as the API serves them: without a key, outside the
API's description, everything the page loads shipped beside it (tests/browser drives
the page itself in a real browser)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from api.dashboard import ASSETS_PATH, STATIC
from core.formats import FORMATS
from tests.conftest import make_client
from tests.helpers import assert_error


class _References(HTMLParser):
    """What a page loads (script src, link href), and the options of its format field."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.formats: list[str] = []
        self._in_format_select = False
        self._option: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script" and named.get("src"):
            self.loaded.append(str(named["src"]))
        if tag == "link" and named.get("rel") in ("stylesheet", "icon"):
            self.loaded.append(str(named["href"]))
        if tag == "select":
            self._in_format_select = named.get("name") == "format"
        if tag == "option" and self._in_format_select:
            self._option = [named["value"]] if named.get("value") else []

    def handle_data(self, data: str) -> None:
        if self._option == []:
            self._option.append(data.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "option" and self._option:
            self.formats.append(self._option[0])
            self._option = None
        if tag == "select":
            self._in_format_select = False


def _page() -> _References:
    references = _References()
    references.feed((STATIC / "index.html").read_text())
    return references


def test_the_page_and_every_asset_it_loads_come_without_a_key_from_this_service() -> None:
    with make_client(None) as anonymous:
        # A query string the API would refuse as an unknown parameter does not stop the page.
        page = anonymous.get("/", params={"utm_source": "mail"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.head("/").status_code == 200

        loaded = [url for url in _page().loaded if not url.startswith("data:")]
        assert loaded and all(url.startswith(ASSETS_PATH.lstrip("/") + "/") for url in loaded), loaded
        modules = [url for url in loaded if url.endswith(".js")]
        seen: set[str] = set()
        while modules:  # every module the page imports, transitively
            url = modules.pop()
            if url in seen:
                continue
            seen.add(url)
            script = anonymous.get(f"/{url}")
            assert script.status_code == 200, url
            assert script.headers["content-type"].startswith("text/javascript")
            assert script.headers["cache-control"] == "no-cache"
            folder = url.rsplit("/", 1)[0]
            modules += [f"{folder}/{name}" for name in re.findall(r'from "\./([\w-]+\.js)"', script.text)]
        assert len(seen) == len(list((STATIC / "js").glob("*.js")))  # none unused, none missing
        style = anonymous.get(f"/{ASSETS_PATH.lstrip('/')}/dashboard.css")
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


def test_a_missing_asset_is_the_apis_404() -> None:
    with make_client(None) as anonymous:
        assert_error(anonymous.get(f"{ASSETS_PATH}/js/nothing.js"), 404, code="not_found")
        # The package's own code beside the assets stays unserved.
        assert_error(anonymous.get(f"{ASSETS_PATH}/%2e%2e/__init__.py"), 404, code="not_found")


def test_the_dashboard_is_no_operation_of_the_api() -> None:
    with make_client(None) as anonymous:
        paths = anonymous.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not [path for path in paths if path.startswith(ASSETS_PATH)]


def test_the_upload_form_offers_every_format_the_api_reads() -> None:
    assert _page().formats == ["auto", *FORMATS]
