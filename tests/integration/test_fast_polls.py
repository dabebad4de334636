"""What a poll costs the database: the status, events and metrics polls of a known key
are one query each, in no transaction; a revoked key is refused within the key cache's
bound."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from core.auth import create_key, create_organization, revoke_key
from core.db import get_engine, session_scope
from core.events import record_metric
from core.settings import get_settings
from tests.conftest import TEST_ORG, make_client
from tests.helpers import assert_error, unsent_queued_job


@contextmanager
def counted() -> Iterator[dict[str, int]]:
    """Statements and commits on the engine while the block runs."""
    counts = {"queries": 0, "commits": 0}

    def query(*_: Any) -> None:
        counts["queries"] += 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", query)
    event.listen(engine, "commit", commit)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", query)
        event.remove(engine, "commit", commit)


def polls(client: TestClient, job_id: str) -> dict[str, Any]:
    base = f"/v1/fine_tuning/jobs/{job_id}"
    return {path: client.get(base + path) for path in ("", "/events", "/metrics")}


def test_a_poll_is_one_query_and_no_commit(client_module: TestClient, chat_file: str) -> None:
    # Queued and never sent: no pre-flight or training worker changes it between polls.
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    with session_scope() as session:
        record_metric(session, job_id, 1, {"loss": 2.5})
    polls(client_module, job_id)  # the key is now known to this process
    for path, response in polls(client_module, job_id).items():
        with counted() as counts:
            again = client_module.get(f"/v1/fine_tuning/jobs/{job_id}{path}")
        assert again.status_code == 200 and again.json() == response.json(), path
        assert counts == {"queries": 1, "commits": 0}, path
    assert client_module.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"][0]["loss"] == 2.5
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_one_query_polls_still_keep_organizations_apart(
    client_module: TestClient, chat_file: str, api_keys: dict[str, str]
) -> None:
    job_id = client_module.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file})
    job_id = job_id.json()["id"]
    with session_scope() as session:
        record_metric(session, job_id, 1, {"loss": 2.5})
    with make_client(api_keys["org-other"]) as intruder:
        for path, response in polls(intruder, job_id).items():
            assert_error(response, 404, param="fine_tuning_job_id", code="not_found")
            assert job_id in response.json()["error"]["message"], path
        first = client_module.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"][-1]["id"]
        cursor = intruder.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"after": first})
        assert_error(cursor, 404, param="fine_tuning_job_id")
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_a_revoked_key_is_refused_within_the_cache_bound() -> None:
    settings = get_settings()
    bound, settings.auth_cache_seconds = settings.auth_cache_seconds, 1.0
    try:
        with session_scope() as session:
            org = create_organization(session, "revocation")
            row, key = create_key(session, org.id)
        with make_client(key) as client:
            assert client.get("/v1/models").status_code == 200
            with counted() as counts:  # (a base model of the service is read without a query)
                assert client.get("/v1/models/tiny-llama").status_code == 200
            assert counts["queries"] == 0  # a known key costs no query
            with session_scope() as session:
                revoke_key(session, row.id)
            revoked_at = time.monotonic()
            # Still remembered for up to the bound (what the cache saves)...
            assert client.get("/v1/models").status_code == 200
            while (response := client.get("/v1/models")).status_code == 200:
                assert time.monotonic() - revoked_at < settings.auth_cache_seconds + 0.5, "still accepted"
                time.sleep(0.05)
            # ...then refused, and refused from then on.
            assert_error(response, 401, code="invalid_api_key")
            assert_error(client.get("/v1/models"), 401, code="invalid_api_key")
    finally:
        settings.auth_cache_seconds = bound
