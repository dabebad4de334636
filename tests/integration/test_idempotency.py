"""Idempotency-Key on POST /v1/files and POST /v1/fine_tuning/jobs."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from core.db import session_scope
from core.models import IdempotencyKey, Job
from tests.helpers import EXAMPLES, assert_error, chat, file_rows, jsonl, stored_objects, upload


def job_rows() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_a_retried_upload_returns_the_first_file_and_stores_nothing_twice(client_module) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    content = (EXAMPLES / "chat.jsonl").read_bytes()
    headers = {"Idempotency-Key": "upload-1"}
    first = client.post(
        "/v1/files", files={"file": ("chat.jsonl", content)}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    rows, objects = file_rows(), stored_objects()
    again = client.post(
        "/v1/files", files={"file": ("chat.jsonl", content)}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (file_rows(), stored_objects()) == (rows, objects)

    other = client.post(
        "/v1/files", files={"file": ("chat.jsonl", jsonl(chat()) * 2)}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert_error(other, 422, param="Idempotency-Key", code="idempotency_key_reused")
    assert (file_rows(), stored_objects()) == (rows, objects)
    # Without a key, the same upload is a new file.
    assert upload(client, content, "chat.jsonl").json()["id"] != first.json()["id"]


def test_a_retried_job_submission_returns_the_first_job(client_module, chat_file: str) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    body = {"model": "tiny-llama", "training_file": chat_file, "suffix": "idem"}
    headers = {"Idempotency-Key": "job-1"}
    first = client.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert first.status_code == 200
    jobs = job_rows()
    again = client.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert job_rows() == jobs
    assert_error(
        client.post("/v1/fine_tuning/jobs", json=body | {"suffix": "other"}, headers=headers),
        422,
        code="idempotency_key_reused",
    )
    # Keys belong to an endpoint: the same key on the uploads endpoint is another key.
    content = (EXAMPLES / "chat.jsonl").read_bytes()
    assert (
        client.post(
            "/v1/files", files={"file": ("c.jsonl", content)}, data={"purpose": "fine-tune"}, headers=headers
        ).status_code
        == 200
    )
    client.post(f"/v1/fine_tuning/jobs/{first.json()['id']}/cancel")


def test_a_failed_request_is_not_remembered_and_keys_expire(client_module, chat_file: str) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    headers = {"Idempotency-Key": "job-2"}
    bad = {"model": "tiny-llama", "training_file": "file-missing"}
    assert_error(client.post("/v1/fine_tuning/jobs", json=bad, headers=headers), 404)
    good = {"model": "tiny-llama", "training_file": chat_file}
    created = client.post("/v1/fine_tuning/jobs", json=good, headers=headers)
    assert created.status_code == 200, created.text  # the failure did not use the key up
    client.post(f"/v1/fine_tuning/jobs/{created.json()['id']}/cancel")

    with session_scope() as session:  # 25 hours later
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "job-2")
            .values(created_at=IdempotencyKey.created_at - 25 * 3600)
        )
    later = client.post("/v1/fine_tuning/jobs", json=good, headers=headers)
    assert later.status_code == 200 and later.json()["id"] != created.json()["id"]
    client.post(f"/v1/fine_tuning/jobs/{later.json()['id']}/cancel")


def test_a_key_in_use_by_a_request_in_progress_is_a_conflict(client_module, chat_file: str, api_keys) -> None:  # type: ignore[no-untyped-def]
    from core import idempotency

    # Another request holds the key, not finished yet (the claim is committed at once).
    assert idempotency.reserve("org-test", "POST /v1/fine_tuning/jobs", "job-3") is None
    body = {"model": "tiny-llama", "training_file": chat_file}
    response = client_module.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "job-3"})
    assert_error(response, 409, param="Idempotency-Key", code="idempotency_key_in_use")
    too_long = client_module.post("/v1/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k" * 256})
    assert_error(too_long, 400, param="Idempotency-Key", code="invalid_idempotency_key")


def test_a_failed_upload_is_not_remembered(client_module: TestClient) -> None:
    headers = {"Idempotency-Key": "upload-2"}
    bad = client_module.post(
        "/v1/files", files={"file": ("bad.jsonl", b"not json\n")}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert_error(bad, 400, code="invalid_file")
    good = client_module.post(
        "/v1/files", files={"file": ("good.jsonl", jsonl(chat()))}, data={"purpose": "fine-tune"}, headers=headers
    )
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers


def test_concurrent_claims_of_one_key_let_exactly_one_request_run() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from core import idempotency
    from core.errors import Conflict

    def claim(_: int) -> str:
        try:
            return "claimed" if idempotency.reserve("org-test", "POST /v1/files", "race-1") is None else "replay"
        except Conflict:
            return "in use"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(claim, range(8)))
    assert outcomes == ["claimed"] + ["in use"] * 7
