"""Uploads that never finish: the client's connection drops mid-stream, or the API
process is killed (SIGKILL) in the middle of one. Neither may leave a file row or a
stored object behind; a killed API's temporary object is removed once it restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings
from tests.conftest import DATA_DIR, ROOT, TEST_ORG
from tests.helpers import file_rows, free_port, stored_objects, wait_healthy

BOUNDARY = "fault-test-boundary"
LINE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


class Api:
    """The API as its own process, as in production (uvicorn through `ftsvc api`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = os.environ | {"FTSVC_MAINTENANCE_INTERVAL_SECONDS": "0.5", "FTSVC_ORPHAN_GRACE_SECONDS": "2"}
        with (DATA_DIR / "api-faults.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ftsvc.cli", "api", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_healthy(self.port, self.process, 60, DATA_DIR / "api-faults.log")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def begin_upload(port: int, key: str, announced_mb: int, sent_mb: int) -> socket.socket:
    """Announce an upload of `announced_mb` and send only `sent_mb` of it."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    lines = (announced_mb << 20) // len(LINE)
    length = len(head) + lines * len(LINE) + len(f"\r\n--{BOUNDARY}--\r\n")
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n".encode()
        + head
    )
    conn.sendall(LINE * ((sent_mb << 20) // len(LINE)))
    return conn


def temporaries() -> list[Path]:
    tmp = get_settings().storage_root / ".tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def stored() -> tuple[int, set[str]]:
    return file_rows(), stored_objects()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_an_upload_cut_off_by_the_client_leaves_nothing(api: Api, api_keys: dict[str, str]) -> None:
    before = stored()
    conn = begin_upload(api.port, api_keys[TEST_ORG], announced_mb=64, sent_mb=4)
    wait_until(lambda: any(p.stat().st_size > 0 for p in temporaries()), 30, "the upload to reach storage")
    conn.close()  # the client goes away mid-stream
    wait_until(lambda: not temporaries(), 10, "the partial upload to be removed")
    assert stored() == before


def test_an_api_killed_during_an_upload_leaves_nothing_once_restarted(api: Api, api_keys: dict[str, str]) -> None:
    before = stored()
    conn = begin_upload(api.port, api_keys[TEST_ORG], announced_mb=64, sent_mb=4)
    wait_until(lambda: any(p.stat().st_size > 0 for p in temporaries()), 30, "the upload to reach storage")
    api.kill()  # SIGKILL: no handler runs, the temporary object stays behind
    conn.close()
    assert temporaries() and stored() == before  # no row and no published object
    api.start()  # its maintenance loop finds the dead upload's temporary object
    wait_until(lambda: not temporaries(), 20, "the dead upload's temporary object to be removed")
    assert stored() == before
