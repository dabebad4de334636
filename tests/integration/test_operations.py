"""The operators' view: GET /metrics scraped and read with the Prometheus client's own
parser (jobs in several statuses on the real database, GPU-hours, tokens/s, queue
depths, request counts by route template), its optional token, and GET /readyz with every
part up and with parts down (an API process whose broker and store cannot be reached)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from api.schemas import Readiness
from core import leases
from core.db import session_scope
from core.events import record_metric
from core.jobs import transition
from core.models import Job, JobAttempt
from core.queue import get_celery, queue_depths
from core.settings import get_settings
from core.states import JobStatus
from tests.conftest import make_client
from tests.faults.test_outages import api_server
from tests.helpers import (
    EXAMPLES,
    assert_error,
    free_port,
    fresh_org,
    start_embedded_service,
    stop_embedded_service,
    succeeded_job,
    unsent_queued_job,
    upload_ok,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, as the Prometheus parser reads it."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped[(name, frozenset(labels.items()))]


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return samples(response.text)


def set_attempt_times(job_id: str, started_at: float, ended_at: float | None) -> None:
    with session_scope() as session:
        session.execute(
            update(JobAttempt).where(JobAttempt.job_id == job_id).values(started_at=started_at, ended_at=ended_at)
        )


def use_gpus(job_id: str, gpus: int) -> None:
    """The job's spec as a multi-GPU job's reads (`qlora.resources.gpus`)."""
    with session_scope() as session:
        job = session.scalars(select(Job).where(Job.id == job_id)).one()
        qlora = dict(job.spec["qlora"]) | {"resources": {"gpus": gpus}}
        session.execute(update(Job).where(Job.id == job_id).values(spec=job.spec | {"qlora": qlora}))


@pytest.fixture(scope="module")
def org(tiny_model: Path) -> tuple[str, str, str]:
    """A fresh organization (its GPU-hours are this module's alone), its key and a file."""
    org_id, key = fresh_org("operators")
    with make_client(key) as client:
        file_id = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    return org_id, key, file_id


def test_metrics_report_jobs_by_status_gpu_hours_speed_and_queues(org: tuple[str, str, str]) -> None:
    org_id, key, file_id = org
    with make_client(key) as client:
        before = scrape(client)
        queued = unsent_queued_job(org_id, file_id)
        cancelled = unsent_queued_job(org_id, file_id)
        with session_scope() as session:
            transition(session, cancelled, JobStatus.CANCELLED, message="cancelled by the test")
        succeeded_model = succeeded_job(org_id, file_id)
        running = unsent_queued_job(org_id, file_id)
        with session_scope() as session:
            assert leases.claim(session, running, f"test:{running}", "test-host") is not None
            record_metric(session, running, 1, {"loss": 2.0, "tokens_per_second": 900.0})
            record_metric(session, running, 2, {"loss": 1.9, "tokens_per_second": 1234.5})
        with session_scope() as session:
            succeeded = session.scalars(select(Job.id).where(Job.fine_tuned_model == succeeded_model)).one()
        # 1.5 h on 2 GPUs, finished; half an hour so far on 1 GPU, still running.
        use_gpus(succeeded, 2)
        set_attempt_times(succeeded, 1_000.0, 1_000.0 + 1.5 * 3600)
        set_attempt_times(running, time.time() - 1800, None)

        assert client.get(f"/v1/fine_tuning/jobs/{queued}").status_code == 200
        assert client.get(f"/v1/fine_tuning/jobs/{running}").status_code == 200
        assert client.get("/no/such/path").status_code == 404
        after = scrape(client)

    for status in JobStatus:
        expected = 1 if status in {"queued", "cancelled", "succeeded", "running"} else 0
        grew = value(after, "ftsvc_jobs", status=status) - value(before, "ftsvc_jobs", status=status)
        assert grew == expected, status
    assert value(after, "ftsvc_gpu_hours", organization=org_id) == pytest.approx(1.5 * 2 + 0.5, abs=0.01)
    speed = value(after, "ftsvc_training_tokens_per_second", job_id=running, organization=org_id)
    assert speed == 1234.5  # the latest step's, not the first's
    for queue in ("training", "preflight"):
        assert value(after, "ftsvc_queue_depth", queue=queue) >= 0
    for source in ("jobs", "gpu_hours", "training_speed", "queues"):
        assert value(after, "ftsvc_metrics_source_up", source=source) == 1

    # By route template, not by raw path: both jobs' GETs are one series; every unknown
    # path is one more.
    job_route = "/v1/fine_tuning/jobs/{fine_tuning_job_id}"
    assert value(after, "ftsvc_http_requests_total", method="GET", route=job_route, status="200") == 2
    assert value(after, "ftsvc_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert value(after, "ftsvc_http_request_duration_seconds_count", method="GET", route=job_route) == 2
    assert value(after, "ftsvc_http_requests_total", method="GET", route="/metrics", status="200") == 1
    routes = {dict(labels).get("route") for name, labels in after if name == "ftsvc_http_requests_total"}
    assert f"/v1/fine_tuning/jobs/{queued}" not in routes


def test_metrics_count_live_workers_their_gpus_and_inference_servers(org: tuple[str, str, str]) -> None:
    from core import inference_servers, worker_registry
    from core.worker_registry import Device, Inventory

    names = [f"metrics-{uuid.uuid4().hex[:8]}@host-a", f"metrics-{uuid.uuid4().hex[:8]}@host-b"]
    url = f"http://metrics-{uuid.uuid4().hex[:8]}:8100"
    h200 = Device(0, "NVIDIA H200", 141 << 30)
    with make_client(org[1]) as client:
        before = scrape(client)
        with session_scope() as session:
            worker_registry.advertise(session, names[0], "host-a", ["training"], Inventory((h200, h200), 1 << 40))
            worker_registry.advertise(session, names[1], "host-b", ["training"], Inventory((), 1 << 34))
            inference_servers.heartbeat(session, url, "cuda:0", "NVIDIA H200", 141 << 30, [], time.time())
        try:
            after = scrape(client)
        finally:
            with session_scope() as session:
                for name in names:
                    worker_registry.withdraw(session, name)
                inference_servers.remove(session, url)
        gone = scrape(client)

    def grew(name: str, **labels: str) -> float:  # (a series with no sample before: 0)
        key = (name, frozenset(labels.items()))
        return after[key] - before.get(key, 0.0)

    assert grew("ftsvc_live_workers") == 2
    assert grew("ftsvc_live_gpus", gpu="NVIDIA H200") == 2
    assert grew("ftsvc_live_inference_servers", device="NVIDIA H200") == 1
    assert value(gone, "ftsvc_live_workers") == value(before, "ftsvc_live_workers")
    assert value(after, "ftsvc_metrics_source_up", source="workers") == 1


def test_queue_depth_counts_the_messages_waiting_in_each_queue() -> None:
    """Redis: the lengths of the queue's lists, as Celery's messages fill them."""
    waiting, empty = "ops-depth-test", "ops-depth-empty"
    for _ in range(3):
        get_celery().send_task("ftsvc.no_such_task", args=["x"], queue=waiting)
    try:
        assert queue_depths([waiting, empty], timeout=2) == {waiting: 3, empty: 0}
    finally:
        with get_celery().connection_for_write() as connection:
            connection.default_channel.queue_purge(waiting)


def test_metrics_ask_for_the_token_when_one_is_set(org: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "metrics_token", "scrape-secret")
    with make_client(None) as client:
        assert_error(client.get("/metrics"), 401, code="missing_api_key")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
        assert_error(wrong, 401, code="invalid_metrics_token")
        assert wrong.headers["www-authenticate"] == "Bearer"
        right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert right.status_code == 200
        assert ("ftsvc_jobs", frozenset({("status", "queued")})) in samples(right.text)


def test_readyz_is_ready_when_every_part_answers() -> None:
    with make_client(None) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    ready = Readiness.model_validate_json(response.text)
    assert ready.status == "ready"
    assert set(ready.checks) == {"database", "broker", "store"}
    assert all(check.ok and check.error is None for check in ready.checks.values())


@pytest.fixture
def api_with_parts_down(tmp_path: Path) -> Iterator[int]:
    """`ftsvc api` on the test database, with its broker on a port nothing listens on
    and its store under a regular file (no directory can be made there)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with api_server(
        "api-parts-down.log",
        FTSVC_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        FTSVC_STORAGE_ROOT=str(blocker / "storage"),
        FTSVC_READINESS_TIMEOUT_SECONDS="3",
    ) as port:
        yield port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_readyz_names_each_part_that_is_down(api_with_parts_down: int) -> None:
    started = time.monotonic()
    status, body = get(api_with_parts_down, "/readyz")
    assert status == 503, body
    assert time.monotonic() - started < 5  # each check is bounded; they run at once
    ready = Readiness.model_validate_json(body)
    assert ready.status == "not_ready"
    assert ready.checks["database"].ok and ready.checks["database"].error is None
    assert not ready.checks["broker"].ok and "Connection refused" in (ready.checks["broker"].error or "")
    assert not ready.checks["store"].ok and "NotADirectoryError" in (ready.checks["store"].error or "")

    # /metrics still answers: what the database says, and the broker's queues marked down.
    status, text = get(api_with_parts_down, "/metrics")
    assert status == 200, text
    scraped = samples(text)
    assert value(scraped, "ftsvc_metrics_source_up", source="queues") == 0
    assert value(scraped, "ftsvc_metrics_source_up", source="jobs") == 1
    assert not [name for name, _ in scraped if name == "ftsvc_queue_depth"]


def test_the_embedded_service_is_ready_and_serves_metrics_to_localhost(tmp_path: Path) -> None:
    """SQLite, the broker in a SQLite file (kombu's SQLAlchemy transport), a local store:
    /readyz checks all three, /metrics is open (no token set) and reads the queues' table."""
    port = free_port()
    server = start_embedded_service(tmp_path / "data", port, tmp_path / "serve.log")
    try:
        status, body = get(port, "/readyz")
        assert status == 200, body
        assert all(check.ok for check in Readiness.model_validate_json(body).checks.values())
        status, text = get(port, "/metrics")
        assert status == 200, text
        scraped = samples(text)
        assert value(scraped, "ftsvc_queue_depth", queue="training") == 0
        assert value(scraped, "ftsvc_queue_depth", queue="preflight") == 0
        assert value(scraped, "ftsvc_jobs", status="running") == 0
    finally:
        stop_embedded_service(server)
