"""Event streams over a real uvicorn server: many streams on one job each receive every
event in order and end with the job, while they wait they hold no worker thread and no
database connection (so plain requests are served meanwhile), and a stream its client
closes leaves nothing behind."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio.to_thread
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.streams import event_hub
from core.db import get_engine, session_scope
from core.events import add_event
from core.jobs import transition
from core.states import JobStatus
from tests.conftest import TEST_ORG
from tests.helpers import all_events, unsent_queued_job

STREAMS = 200  # five times the API's worker threads (anyio's default of 40)
T = TypeVar("T")


class Server:
    """The API under uvicorn in a thread of this process, on an event loop of its own."""

    def __init__(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.loop = asyncio.new_event_loop()
        self.server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve([sock]),))
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    def call(self, function: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine function on the server's event loop."""
        return asyncio.run_coroutine_threadsafe(function(), self.loop).result(timeout=10)

    def streams(self, job_id: str) -> int:
        async def count() -> int:
            return event_hub().streams(job_id)

        return self.call(count)

    def busy_threads(self) -> int:
        async def borrowed() -> int:
            return int(anyio.to_thread.current_default_thread_limiter().borrowed_tokens)

        return self.call(borrowed)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def job_id(client_module: TestClient, chat_file: str) -> str:
    """A job only this test writes events for: queued and never sent, so neither the
    pre-flight worker nor a training worker of the session touches it."""
    return unsent_queued_job(TEST_ORG, chat_file)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def ids(text: str) -> list[str]:
    return [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]


async def follow(client: httpx.AsyncClient, path: str, received: list[str], first: int) -> str:
    """Read a stream to its end; `received` counts its events as they come."""
    text = ""
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_text():
            text += chunk
            received[0] = len(ids(text))
    assert received[0] >= first
    return text


def worker_writes(job_id: str, events: int) -> None:
    """What a worker does: events in their own transactions, then the job ends."""
    for step in range(events):
        with session_scope() as session:
            add_event(session, job_id, f"step {step}")
    with session_scope() as session:
        error = {"code": "internal_error", "message": "ended by the test", "param": None}
        assert transition(session, job_id, JobStatus.FAILED, error=error)


def test_many_streams_on_one_job_get_every_event_while_the_api_stays_free(
    server: Server, client_module: TestClient, job_id: str, api_keys: dict[str, str]
) -> None:
    before = [e["id"] for e in all_events(client_module, job_id)]
    path = f"/v1/fine_tuning/jobs/{job_id}/events/stream"
    headers = {"Authorization": f"Bearer {api_keys['org-test']}"}
    # The last event seen by a stream that resumes from the first one.
    resume = {"Last-Event-ID": before[0]}

    async def scenario() -> tuple[list[str], str, int, int]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60, limits=limits) as client:
            counters = [[0] for _ in range(STREAMS)]
            tasks = [asyncio.create_task(follow(client, path, c, len(before))) for c in counters]
            resumed = asyncio.create_task(client.get(path, headers=resume))
            while server.streams(job_id) < STREAMS + 1 or min(c[0] for c in counters) < len(before):
                await asyncio.sleep(0.05)
            # Every stream is open and waiting: none holds a thread or a connection...
            threads, connections = server.busy_threads(), get_engine().pool.checkedout()  # type: ignore[attr-defined]
            # ...and a plain request is served at once.
            status = await client.get(f"/v1/fine_tuning/jobs/{job_id}", timeout=5)
            assert status.status_code == 200 and status.json()["status"] != "failed"
            await asyncio.to_thread(worker_writes, job_id, 20)
            texts = await asyncio.gather(*tasks)
            return texts, (await resumed).text, threads, connections

    texts, resumed, threads, connections = asyncio.run(scenario())
    assert threads == 0 and connections == 0
    every = [e["id"] for e in all_events(client_module, job_id)]
    assert len(every) == len(before) + 21  # 20 steps and the failure
    for text in texts:
        assert ids(text) == every
        assert text.rstrip().endswith('event: end\ndata: {"status": "failed"}')
    assert ids(resumed) == every[1:]
    wait_until(lambda: server.streams(job_id) == 0, "streams that ended are still followed")


def test_a_stream_closed_by_its_client_is_cleaned_up(
    server: Server, client_module: TestClient, job_id: str, api_keys: dict[str, str]
) -> None:
    path = f"{server.url}/v1/fine_tuning/jobs/{job_id}/events/stream"
    headers = {"Authorization": f"Bearer {api_keys['org-test']}"}
    with httpx.Client(headers=headers, timeout=30) as leaving, httpx.Client(headers=headers, timeout=30) as staying:
        with leaving.stream("GET", path) as gone, staying.stream("GET", path) as kept:
            # (An iterator dropped half-way closes its response: keep them.)
            chunks = {"gone": gone.iter_text(), "kept": kept.iter_text()}
            assert all(ids(next(chunk)) for chunk in chunks.values())
            wait_until(lambda: server.streams(job_id) == 2, "both streams followed")
            gone.close()
            wait_until(lambda: server.streams(job_id) == 1, "a closed stream is still followed")
            client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
            assert "event: end" in "".join(chunks["kept"])
    wait_until(lambda: server.streams(job_id) == 0, "a finished stream is still followed")
