"""Webhooks end to end: a receiver on 127.0.0.1 (an HTTP server in a thread), a real
delivery worker on the webhook queue (FTSVC_WEBHOOK_QUEUE is its own queue in the tests,
so each test decides which networks its worker allows), jobs ending for real (cancelled
through the API, failed by the pre-flight worker, succeeded through the worker's own
publishing), requests verified with the README's snippet, retries driven by the
maintenance loop's step, and the server-side request forgery guard."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.queue import get_celery
from core.settings import get_settings
from core.webhooks import resend_due
from tests.conftest import Workers, make_client
from tests.helpers import (
    Received,
    Receiver,
    assert_error,
    changed_settings,
    chat,
    fresh_org,
    jsonl,
    readme_verify,
    succeeded_job,
    upload_ok,
    wait_for,
)

LOOPBACK = "127.0.0.1/32"
EVENTS = ["fine_tuning.job.cancelled", "fine_tuning.job.failed", "fine_tuning.job.succeeded"]


verify = readme_verify()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def org(tiny_model: Path, preflight_worker: Workers) -> Iterator[TestClient]:
    """A client of an organization of its own: no other test's jobs reach its webhooks."""
    with make_client(fresh_org("webhooks")[1]) as client:
        yield client


@pytest.fixture(scope="module")
def delivery_workers() -> Iterator[Workers]:
    """Delivery workers; each test starts the one it needs (`delivering`)."""
    workers = Workers()
    yield workers
    for name in list(workers.processes):
        workers.stop(name)


@pytest.fixture(scope="module")
def delivering(delivery_workers: Workers) -> str:
    """A delivery worker that allows loopback: it sends to the receiver."""
    return delivery_workers.start([get_settings().webhook_queue], FTSVC_WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)


@pytest.fixture(scope="module")
def training_file(org: TestClient) -> str:
    return upload_ok(org, jsonl(*[chat(f"Question {i}?", f"Answer {i}.") for i in range(8)]))


def register(client: TestClient, url: str, **body: Any) -> dict[str, Any]:
    with changed_settings(FTSVC_WEBHOOK_ALLOWED_NETWORKS=LOOPBACK):
        response = client.post("/v1/organization/webhooks", json={"url": url} | body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@contextmanager
def registered(client: TestClient, url: str, **body: Any) -> Iterator[dict[str, Any]]:
    """An endpoint for the length of a test: later tests' events do not reach it."""
    webhook = register(client, url, **body)
    try:
        yield webhook
    finally:
        assert client.delete(f"/v1/organization/webhooks/{webhook['id']}").status_code == 200


def cancelled_job(client: TestClient, training_file: str) -> str:
    """A job created through the API and cancelled through it at once."""
    created = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": training_file})
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    return job_id


def deliveries(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/organization/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def settled(client: TestClient, webhook_id: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """The endpoint's deliveries once `count` of them are no longer pending; meanwhile
    this runs the maintenance loop's webhook step, which sends the retries due."""
    deadline = time.monotonic() + timeout
    while True:
        found = deliveries(client, webhook_id)
        if len([d for d in found if d["status"] != "pending"]) >= count:
            return found
        assert time.monotonic() < deadline, found
        resend_due()
        time.sleep(0.2)


def assert_signed(request: Received, secret: str, event_type: str, job_id: str) -> dict[str, Any]:
    assert verify(secret, request.headers, request.body), request.headers
    event: dict[str, Any] = json.loads(request.body)
    assert event["object"] == "event" and event["type"] == event_type and event["data"] == {"id": job_id}
    assert request.headers["webhook-id"] == event["id"] and event["id"].startswith("evt-")
    assert request.headers["content-type"] == "application/json"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    return event


def test_registration_shows_the_secret_once(org: TestClient) -> None:
    with registered(org, "https://8.8.8.8/hooks", description="alerts") as webhook:
        assert webhook["object"] == "webhook_endpoint" and webhook["id"].startswith("wh-")
        assert webhook["secret"].startswith("whsec_")
        assert webhook["events"] == EVENTS and webhook["description"] == "alerts"
        read = org.get(f"/v1/organization/webhooks/{webhook['id']}").json()
        assert read == {k: v for k, v in webhook.items() if k != "secret"}
        listed = org.get("/v1/organization/webhooks").json()
        assert listed["object"] == "list" and [w["id"] for w in listed["data"]] == [webhook["id"]]
        assert "secret" not in listed["data"][0]
        rotated = org.post(f"/v1/organization/webhooks/{webhook['id']}/rotate_secret").json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != webhook["secret"]
    assert_error(org.get(f"/v1/organization/webhooks/{webhook['id']}"), 404, param="webhook_id")
    assert org.get("/v1/organization/webhooks").json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "url"),
        ({"url": "https://8.8.8.8/", "events": []}, "events"),
        ({"url": "https://8.8.8.8/", "events": ["fine_tuning.job.created"]}, "events[0]"),
        ({"url": "https://8.8.8.8/", "description": "x" * 513}, "description"),
        ({"url": "https://8.8.8.8/", "description": "a\x00b"}, "description"),  # Postgres text has no NUL
        ({"url": "https://8.8.8.8/\x00"}, "url"),
        ({"url": "https://8.8.8.8/", "secret": "mine"}, "secret"),
        ({"url": "https://8.8.8.8/" + "a" * 2048}, "url"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(org: TestClient, body: dict[str, Any], param: str) -> None:
    assert_error(org.post("/v1/organization/webhooks", json=body), 400, param=param)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://127.0.0.1/hooks", "webhook_url_not_allowed"),
        ("https://10.0.0.7/hooks", "webhook_url_not_allowed"),
        ("https://192.168.1.20:8443/hooks", "webhook_url_not_allowed"),
        ("https://169.254.169.254/latest/meta-data/", "webhook_url_not_allowed"),
        ("https://localhost/hooks", "webhook_url_not_allowed"),  # a name resolving to loopback
        ("https://[::1]/hooks", "webhook_url_not_allowed"),
        ("https://[::ffff:127.0.0.1]/hooks", "webhook_url_not_allowed"),
        ("https://[fd12::1]/hooks", "webhook_url_not_allowed"),
        ("https://0.0.0.0/hooks", "webhook_url_not_allowed"),
        ("https://224.0.0.1/hooks", "webhook_url_not_allowed"),
        ("https://no-such-host.invalid/hooks", "webhook_url_unresolvable"),
        ("ftp://8.8.8.8/hooks", "invalid_webhook_url"),
        ("file:///etc/passwd", "invalid_webhook_url"),
        ("8.8.8.8/hooks", "invalid_webhook_url"),
        ("https://user:password@8.8.8.8/hooks", "invalid_webhook_url"),
    ],
)
def test_urls_of_the_services_own_networks_are_refused_at_registration(org: TestClient, url: str, code: str) -> None:
    assert_error(org.post("/v1/organization/webhooks", json={"url": url}), 400, param="url", code=code)


def test_plain_http_only_when_allowed(org: TestClient) -> None:
    with changed_settings(FTSVC_WEBHOOK_ALLOW_HTTP="false"):
        response = org.post("/v1/organization/webhooks", json={"url": "http://8.8.8.8/hooks"})
    assert_error(response, 400, param="url", code="invalid_webhook_url")


def test_an_organization_has_at_most_ten(org: TestClient) -> None:
    ids = [register(org, f"https://8.8.8.8/hooks/{i}")["id"] for i in range(10)]
    try:
        refused = org.post("/v1/organization/webhooks", json={"url": "https://8.8.8.8/hooks/10"})
        assert_error(refused, 400, code="webhook_limit_reached")
    finally:
        for webhook_id in ids:
            org.delete(f"/v1/organization/webhooks/{webhook_id}")


def test_another_organizations_webhooks_are_not_found(org: TestClient) -> None:
    with registered(org, "https://8.8.8.8/hooks") as webhook, make_client(fresh_org("webhooks-other")[1]) as other:
        base = f"/v1/organization/webhooks/{webhook['id']}"
        assert other.get("/v1/organization/webhooks").json()["data"] == []
        for response in (
            other.get(base),
            other.delete(base),
            other.post(f"{base}/rotate_secret"),
            other.get(f"{base}/deliveries"),
        ):
            assert_error(response, 404, param="webhook_id")
        assert org.get(base).status_code == 200  # untouched


def test_a_cancelled_job_is_delivered_signed(
    org: TestClient, receiver: Receiver, delivering: str, training_file: str
) -> None:
    with registered(org, receiver.url) as webhook:
        job_id = cancelled_job(org, training_file)
        event = assert_signed(receiver.next(), webhook["secret"], "fine_tuning.job.cancelled", job_id)
        [delivery] = settled(org, webhook["id"])
        assert delivery["status"] == "delivered" and delivery["next_attempt_at"] is None
        assert delivery["event"] == event and delivery["webhook_id"] == webhook["id"]
        [attempt] = delivery["attempts"]
        assert attempt["number"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
        assert attempt["duration_ms"] >= 0 and abs(attempt["attempted_at"] - time.time()) < 60
        read = org.get(f"/v1/organization/webhooks/{webhook['id']}/deliveries/{delivery['id']}").json()
        assert read == delivery


def test_a_job_failed_by_the_pre_flight_worker_and_a_succeeded_one_reach_the_endpoints_that_want_them(
    org: TestClient, receiver: Receiver, delivering: str, training_file: str
) -> None:
    with (
        registered(org, receiver.url, events=["fine_tuning.job.failed"]) as failures,
        registered(org, receiver.url, events=["fine_tuning.job.succeeded"]) as successes,
    ):
        long_prompts = upload_ok(org, jsonl(*[chat("word " * 100, "ok") for _ in range(3)]))
        created = org.post(
            "/v1/fine_tuning/jobs",
            json={"model": "tiny-llama", "training_file": long_prompts, "qlora": {"training": {"max_seq_length": 32}}},
        ).json()
        failed = wait_for(org, created["id"], {"failed"})
        assert failed["error"]["code"] == "no_trainable_tokens"
        assert_signed(receiver.next(), failures["secret"], "fine_tuning.job.failed", created["id"])
        org_id = org.get("/v1/organization/usage").json()["organization_id"]
        succeeded = succeeded_job(org_id, training_file).rsplit(":", 1)[1]
        assert_signed(receiver.next(), successes["secret"], "fine_tuning.job.succeeded", succeeded)
        receiver.assert_nothing(1.0)  # neither endpoint got the other's event
        assert [d["event"]["data"]["id"] for d in settled(org, failures["id"])] == [created["id"]]
        assert [d["event"]["data"]["id"] for d in settled(org, successes["id"])] == [succeeded]


def test_failed_attempts_are_retried_with_backoff_and_recorded(
    org: TestClient, receiver: Receiver, delivering: str, training_file: str
) -> None:
    receiver.answers = [(500, b"bad\x00gateway\n"), (503, b"ok")]
    with registered(org, receiver.url) as webhook:
        job_id = cancelled_job(org, training_file)
        [delivery] = settled(org, webhook["id"])
        requests = [receiver.next() for _ in range(3)]
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    # The start of a refusal's body, printable (Postgres text cannot hold its NUL).
    assert [a["error"] for a in delivery["attempts"]] == ["HTTP 500: bad gateway", "HTTP 503: ok", None]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    # The retries waited: about 0.3 s, then about 1.2 s (FTSVC_WEBHOOK_RETRY_BASE_SECONDS=0.3, x4, +-25%).
    times = [a["attempted_at"] for a in delivery["attempts"]]
    assert times[1] - times[0] >= 0.3 * 0.75 and times[2] - times[1] >= 1.2 * 0.75, times
    # Every attempt is the same event, signed afresh.
    assert len({r.headers["webhook-id"] for r in requests}) == 1 and len({r.body for r in requests}) == 1
    for request in requests:
        assert_signed(request, webhook["secret"], "fine_tuning.job.cancelled", job_id)


def test_gone_fails_the_delivery_at_once_and_redelivery_sends_the_same_event(
    org: TestClient, receiver: Receiver, delivering: str, training_file: str
) -> None:
    receiver.answers = [(410, b"")]
    with registered(org, receiver.url) as webhook:
        job_id = cancelled_job(org, training_file)
        first = receiver.next()
        [delivery] = settled(org, webhook["id"])
        assert delivery["status"] == "failed" and [a["status_code"] for a in delivery["attempts"]] == [410]
        redelivered = org.post(f"/v1/organization/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver")
        assert redelivered.status_code == 200 and redelivered.json()["id"] != delivery["id"]
        again = receiver.next()
        assert again.body == first.body and again.headers["webhook-id"] == first.headers["webhook-id"]
        assert_signed(again, webhook["secret"], "fine_tuning.job.cancelled", job_id)
        newest, oldest = settled(org, webhook["id"], count=2)
        assert newest["status"] == "delivered" and oldest["status"] == "failed"


def test_a_rotated_secret_signs_the_next_delivery(
    org: TestClient, receiver: Receiver, delivering: str, training_file: str
) -> None:
    with registered(org, receiver.url) as webhook:
        rotated = org.post(f"/v1/organization/webhooks/{webhook['id']}/rotate_secret").json()["secret"]
        job_id = cancelled_job(org, training_file)
        request = receiver.next()
        assert_signed(request, rotated, "fine_tuning.job.cancelled", job_id)
        assert not verify(webhook["secret"], request.headers, request.body)


def test_a_lost_message_is_sent_again_by_the_maintenance_loop(
    org: TestClient, receiver: Receiver, delivery_workers: Workers, delivering: str, training_file: str
) -> None:
    with registered(org, receiver.url) as webhook:
        delivery_workers.stop(delivering)
        try:
            cancelled_job(org, training_file)
            with get_celery().connection_for_write() as connection:  # the broker loses the message
                assert connection.default_channel.queue_purge(get_settings().webhook_queue) == 1
        finally:
            restarted = delivery_workers.start([get_settings().webhook_queue], FTSVC_WEBHOOK_ALLOWED_NETWORKS=LOOPBACK)
        receiver.assert_nothing(2.0)
        [delivery] = settled(org, webhook["id"])  # runs the maintenance loop's step
        assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 1
        assert receiver.next().headers["webhook-id"] == delivery["event"]["id"]
    delivery_workers.stop(restarted)


def test_a_url_no_longer_allowed_is_refused_at_delivery(
    org: TestClient, receiver: Receiver, delivery_workers: Workers, training_file: str
) -> None:
    # Registered while loopback was allowed; the worker that delivers allows it no more.
    strict = delivery_workers.start([get_settings().webhook_queue], FTSVC_WEBHOOK_ALLOWED_NETWORKS="")
    try:
        with registered(org, receiver.url) as webhook:
            cancelled_job(org, training_file)
            [delivery] = settled(org, webhook["id"])
        assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None
        [attempt] = delivery["attempts"]
        assert attempt["status_code"] is None and "resolves to 127.0.0.1" in attempt["error"], attempt
        receiver.assert_nothing(1.0)
    finally:
        delivery_workers.stop(strict)
