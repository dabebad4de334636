"""The dashboard in a real browser: Debian's Chromium (`apt-get install chromium`; .ci/run
installs it) driven by Playwright, against the API served on a port by `ftsvc api` on the
test database, with the real pre-flight (and, for the slow tests, training) workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.conftest import ROOT, Workers
from tests.helpers import free_port, wait_healthy

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ORG = "org-browser"
# Polls, pre-flight and training steps on a busy 2-core machine take seconds.
TIMEOUT_MS = 60_000
expect.set_options(timeout=TIMEOUT_MS)


class Dashboard:
    """The served API: its address, a key of the browser tests' own organization (so the
    page lists only their jobs), and an HTTP client acting with that key."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def sign_in(self, page: Page, key: str | None = None) -> None:
        page.goto(self.url)
        page.fill("#api-key", key or self.key)
        page.click("#sign-in-form button[type=submit]")


@pytest.fixture(scope="session")
def dashboard(
    tiny_model: Path, preflight_worker: Workers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    from core.auth import create_key, create_organization
    from core.db import session_scope

    with session_scope() as session:
        create_organization(session, "browser", BROWSER_ORG)
        key = create_key(session, BROWSER_ORG)[1]
    port = free_port()
    log_path = tmp_path_factory.mktemp("dashboard") / "api.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "ftsvc.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(port, server, 60, log_path)
        served = Dashboard(f"http://127.0.0.1:{port}/", key)
        yield served
        served.api.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in the
# main thread while it is open, and a later test's asyncio.run() would refuse to start.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run does)")
    # Debian's Chromium: Playwright downloads no browser of its own.
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage: signed out) that fails the test on a script
    error or on a request to anywhere but the service (the page must work offline)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    own = (dashboard.url, f"blob:{dashboard.url.rstrip('/')}", "data:")  # downloads are blobs of the page

    tab.on("request", lambda r: None if r.url.startswith(own) else problems.append(f"request: {r.url}"))
    yield tab
    context.close()
    assert not problems, problems


@pytest.fixture
def screenshot(page: Page, tmp_path: Path) -> Callable[[str], Path]:
    """`screenshot("name")` saves the whole page as tmp_path/name.png (never committed);
    the path of each is printed for a look after a run (pytest -s)."""

    def take(name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return take
