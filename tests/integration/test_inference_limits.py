"""Inference that cannot run now says so at once, in the standard error body, never
hangs: no live inference server (503), a full queue (429), a wait for a turn beyond the
server's timeout (503). A real API process and an inference server with small limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core.settings import get_settings
from tests.conftest import DATA_DIR, TEST_ORG, make_client
from tests.helpers import ServiceProcess, assert_error, start_api, start_inference_server, wait_healthy

CHAT = "/v1/chat/completions"
QUEUE = 2
WAIT_SECONDS = 2.0


def chat(max_tokens: int, **options: Any) -> dict[str, Any]:
    return {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
    } | options


def test_no_live_inference_server_is_503(
    tiny_model: Any, api_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every server's heartbeat is older than the dead timeout (this process's API).
    monkeypatch.setattr(get_settings(), "inference_dead_seconds", -3600.0)
    with make_client(api_keys[TEST_ORG]) as client:
        response = client.post(CHAT, json=chat(5))
    assert_error(response, 503, code="inference_unavailable")
    assert response.headers["retry-after"]


@pytest.fixture(scope="module")
def limited(tiny_model: Any) -> Iterator[ServiceProcess]:
    server = start_inference_server(
        DATA_DIR,
        FTSVC_INFERENCE_MAX_QUEUE=str(QUEUE),
        FTSVC_INFERENCE_MAX_BATCH="1",
        FTSVC_INFERENCE_QUEUE_TIMEOUT_SECONDS=str(WAIT_SECONDS),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(database: None) -> Iterator[ServiceProcess]:
    process = start_api(DATA_DIR)
    yield process
    process.stop()


def test_a_full_queue_is_429_and_a_long_wait_503(
    api: ServiceProcess, limited: ServiceProcess, api_keys: dict[str, str]
) -> None:
    headers = {"Authorization": f"Bearer {api_keys[TEST_ORG]}"}
    wait_healthy(limited.port, limited.process, 30, limited.log_path)
    with httpx.Client(base_url=api.url, headers=headers, timeout=60) as http:
        assert http.post(CHAT, json=chat(2)).status_code == 200  # the base is loaded
        waiting: list[httpx.Response] = []
        with http.stream("POST", CHAT, json=chat(2000, stream=True)) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # (kept: an iterator dropped closes the connection)
            next(lines)
            # Two more wait for their turn behind it (batches of one): the queue is full.
            threads = [threading.Thread(target=lambda: waiting.append(http.post(CHAT, json=chat(3)))) for _ in "ab"]
            for thread in threads:
                thread.start()
            while httpx.get(f"{limited.url}/internal/status").json()["queued"] < QUEUE:
                assert all(thread.is_alive() for thread in threads), [r.text for r in waiting]
            full = http.post(CHAT, json=chat(3))
            assert_error(full, 429, code="inference_queue_full")
            assert full.json()["error"]["type"] == "rate_limit_error"
            for thread in threads:
                thread.join()
        for response in waiting:  # their turn did not come within the server's timeout
            assert_error(response, 503, code="inference_unavailable")
            assert f"{WAIT_SECONDS:g} s" in response.json()["error"]["message"]
