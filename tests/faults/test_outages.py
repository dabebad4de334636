"""Faults the API must answer in words, over a real uvicorn process (`ftsvc api`) and
one kept-alive HTTP connection: an unexpected failure is the standard 500 body and the
connection stays usable; while the database is unreachable (a TCP proxy in front of
Postgres, cut and restored) every request is a 503 with Retry-After, and the API
recovers by itself once the database is back."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.conftest import DATA_DIR, DATABASE_URL, ROOT, TEST_ORG
from tests.helpers import free_port, wait_healthy

UPLOAD_BOUNDARY = "outage-test-boundary"


class TcpProxy:
    """Forwards 127.0.0.1:port to a server until cut: a cut closes the listener and
    every forwarded connection, as a database host that went away; restore listens again
    on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@contextmanager
def api_server(log_name: str, **env: str) -> Iterator[int]:
    """`ftsvc api` on a free port with the test settings and `env`; yields the port."""
    port, log_path = free_port(), DATA_DIR / log_name
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "ftsvc.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=os.environ | env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(port, process, 60, log_path)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


class KeptAlive:
    """One HTTP/1.1 connection for every request, and a check that it is still the same
    one (http.client would silently open a new connection after the server closed it)."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.socket: socket.socket | None = None

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, Any, Any]:
        self.conn.request(method, path, body=body, headers=self.headers | headers)
        response = self.conn.getresponse()
        payload = json.loads(response.read())
        assert response.getheader("Connection") != "close", "the server announced it closes the connection"
        if self.socket is None:
            self.socket = self.conn.sock
        assert self.conn.sock is self.socket, "the connection was closed and opened again"
        return response.status, response.headers, payload


def upload_body(content: bytes) -> tuple[bytes, str]:
    body = (
        (
            f'--{UPLOAD_BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            f'--{UPLOAD_BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="data.jsonl"\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{UPLOAD_BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={UPLOAD_BOUNDARY}"


def assert_error_body(payload: Any, type_: str, code: str) -> None:
    error = payload["error"]
    assert set(error) >= {"message", "type", "param", "code"}, payload
    assert (error["type"], error["code"]) == (type_, code), payload
    assert "Traceback" not in error["message"]


def test_an_unexpected_error_answers_500_and_the_connection_stays_usable(
    tmp_path: Path, api_keys: dict[str, str]
) -> None:
    broken_storage = tmp_path / "storage"
    broken_storage.write_text("a file where the storage directory should be")  # a real fault, even for root
    with api_server("api-broken-storage.log", FTSVC_STORAGE_ROOT=str(broken_storage)) as port:
        client = KeptAlive(port, api_keys[TEST_ORG])
        body, content_type = upload_body(b'{"text": "hello"}\n')

        status, _, payload = client.request("POST", "/v1/files", body, **{"Content-Type": content_type})
        assert status == 500, payload
        assert_error_body(payload, "server_error", "internal_error")
        assert "reference" in payload["error"]["message"]

        status, _, payload = client.request("GET", "/v1/files")  # the same connection, still open
        assert status == 200, payload


def test_a_database_outage_answers_503_with_retry_after_and_recovers_by_itself(api_keys: dict[str, str]) -> None:
    url = sa.make_url(DATABASE_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    with api_server("api-database-outage.log", FTSVC_DATABASE_URL=through_proxy) as port:
        client = KeptAlive(port, api_keys[TEST_ORG])
        assert client.request("GET", "/v1/files")[0] == 200

        proxy.cut()
        body, content_type = upload_body(b'{"text": "hello"}\n')
        for method, path, content in [
            ("GET", "/v1/files", None),
            ("GET", "/v1/fine_tuning/jobs", None),
            ("POST", "/v1/files", body),
            # Base models include the organization's registered (merged) models, in the database.
            ("GET", "/v1/models", None),
        ]:
            status, headers, payload = client.request(method, path, content, **{"Content-Type": content_type})
            assert status == 503, (method, path, payload)
            assert int(headers["Retry-After"]) > 0
            assert_error_body(payload, "service_unavailable", "database_unavailable")
        proxy.restore()  # the same API process, no restart
        status, _, payload = client.request("GET", "/v1/files")
        assert status == 200, payload
        proxy.cut()


def test_connection_failures_are_outages_and_other_database_errors_are_not() -> None:
    """What the API answers 503 (outage) or 500 (a bug), from real drivers' errors."""
    import redis
    from sqlalchemy.exc import DBAPIError

    from core.outages import outage

    def error_of(url: str, sql: str = "SELECT 1") -> DBAPIError:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(sql))
        except DBAPIError as exc:
            return exc
        finally:
            engine.dispose()
        raise AssertionError(f"{sql} did not fail")

    nobody_listens = free_port()
    refused = error_of(sa.make_url(DATABASE_URL).set(port=nobody_listens).render_as_string(hide_password=False))
    assert (found := outage(refused)) is not None and found.code == "database_unavailable"
    assert outage(error_of(DATABASE_URL, "SELEC 1")) is None  # a syntax error: a bug, 500
    assert outage(error_of(DATABASE_URL, "SELECT 1/0")) is None

    try:
        redis.Redis(port=nobody_listens).ping()
    except redis.exceptions.ConnectionError as exc:
        assert (found := outage(exc)) is not None and found.code == "broker_unavailable"
    else:
        raise AssertionError("a Redis that nobody runs answered")


def job_status_after(job_id: str, seconds: float, until: set[str]) -> str:
    """The job's status once it is in `until`, or after `seconds`."""
    from core.db import session_scope
    from core.models import Job

    deadline = time.monotonic() + seconds
    while True:
        with session_scope() as session:
            status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
        if status in until or time.monotonic() > deadline:
            return str(status)
        time.sleep(0.2)


def test_a_pre_flight_waits_out_a_database_outage_instead_of_failing_the_job(chat_file: str) -> None:
    """A pre-flight worker that reaches Postgres through the proxy, on queues of its own
    (no other worker of the session takes its messages): while the proxy is cut its
    job's pre-flight is retried, and once the database is back the job is queued."""
    from core.db import session_scope
    from core.job_creation import create_job
    from core.jobs import transition
    from core.queue import PREFLIGHT_JOB_TASK, get_celery
    from core.specs import JobSpec
    from core.states import JobStatus
    from tests.conftest import Workers

    url = sa.make_url(DATABASE_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.restore()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    queues = {"FTSVC_PREFLIGHT_QUEUE": "outage-preflight", "FTSVC_TRAINING_QUEUE": "outage-training"}
    workers = Workers()
    name = workers.start(["outage-preflight"], FTSVC_DATABASE_URL=through_proxy, **queues)
    try:
        proxy.cut()
        with session_scope() as session:
            job_id = create_job(session, TEST_ORG, JobSpec(model="tiny-llama", training_file=chat_file)).id
        get_celery().send_task(PREFLIGHT_JOB_TASK, args=[job_id], queue="outage-preflight")
        log = DATA_DIR / f"worker-{name}.log"
        deadline = time.monotonic() + 60
        while "waits for an outage to end" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert job_status_after(job_id, 1, set()) == "validating_files"  # not failed
        proxy.restore()
        assert job_status_after(job_id, 120, {"queued", "failed"}) == "queued"
        with session_scope() as session:
            transition(session, job_id, JobStatus.CANCELLED, message="test over")
    finally:
        workers.kill(name)
        proxy.cut()
