"""The jobs API without a worker: creation and its validation, cancellation of queued
jobs, paging, and the transition rules, against the real Postgres. Every job created
here is cancelled, so the worker of later tests drops its message."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.db import session_scope
from core.jobs import transition
from core.states import JobStatus
from tests.helpers import assert_error, chat, jsonl, upload, wait_for


def create(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", **body})


def test_create_resolves_the_spec_and_cancel_is_immediate_for_queued_jobs(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    response = create(client_module, training_file=chat_file, suffix="demo", metadata={"team": "a"}, seed=3)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")
    assert job["status"] == "validating_files" and job["statistics"] is None  # the pre-flight worker's part
    job = wait_for(client_module, job["id"], {"queued"})
    assert job["statistics"]["examples"] == 36 and job["seed"] == 3 and job["metadata"] == {"team": "a"}
    assert job["hyperparameters"] == {"n_epochs": 9, "batch_size": 8, "learning_rate_multiplier": 1.0}
    assert job["qlora"]["quantization"] == {
        "bits": 4,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "auto",
    }
    assert job["qlora"]["adapter"]["target_modules"] == "all-linear"

    # The file is in use by an active job: it cannot be deleted.
    assert_error(client_module.delete(f"/v1/files/{chat_file}"), 409, code="file_in_use")

    cancelled = client_module.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    assert_error(client_module.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel"), 409, code="job_not_cancellable")
    messages = [e["message"] for e in client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/events").json()["data"]]
    assert messages[0] == "Job cancelled by the user" and messages[-1].startswith("Created fine-tuning job")

    stream = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/events/stream").text
    assert stream.count("event: message") == len(messages)
    assert stream.rstrip().endswith('data: {"status": "cancelled"}')
    # A reconnect with Last-Event-ID gets only what came after that event.
    second_id = stream.split("id: ")[2].split("\n")[0]
    resumed = client_module.get(
        f"/v1/fine_tuning/jobs/{job['id']}/events/stream", headers={"Last-Event-ID": second_id}
    ).text
    assert resumed.count("event: message") == len(messages) - 2
    assert_error(
        client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter"), 404, code="artifact_not_ready"
    )


def test_a_stream_resumed_with_another_jobs_event_id_starts_from_its_own_first(
    client_module: TestClient, chat_file: str
) -> None:
    def stream(job_id: str, last_event_id: str | None = None) -> list[str]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        text = client_module.get(f"/v1/fine_tuning/jobs/{job_id}/events/stream", headers=headers).text
        return [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]

    mine, other = (create(client_module, training_file=chat_file).json()["id"] for _ in range(2))
    for job_id in (mine, other):
        client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    # The other job's newest event comes after all of this job's: taken as a position,
    # it would skip them all.
    foreign = stream(other)[-1]
    assert stream(mine, foreign) == stream(mine) and len(stream(mine)) >= 3
    assert stream(mine, "ftevent-unknown") == stream(mine)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": "no-such-model"}, 400, "model", "model_not_found"),
        ({"model": "../../etc"}, 400, "model", "model_not_found"),
        ({"training_file": "file-missing"}, 404, "training_file", "not_found"),
        ({"validation_file": "file-missing"}, 404, "validation_file", "not_found"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 100}}}},
            400,
            "method.supervised.hyperparameters.n_epochs",
            "invalid_request",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}}}},
            400,
            "method.supervised.hyperparameters.learning_rate_multiplier",
            "invalid_request",
        ),
        ({"method": {"type": "reinforcement"}}, 400, "method.type", "invalid_request"),
        ({"qlora": {"adapter": {"r": 0}}}, 400, "qlora.adapter.r", "invalid_request"),
        ({"qlora": {"training": {"max_steps": 0}}}, 400, "qlora.training.max_steps", "invalid_request"),
        ({"qlora": {"quantization": {"quant_type": "int8"}}}, 400, "qlora.quantization.quant_type", "invalid_request"),
        ({"learning_rate": 0.1}, 400, "learning_rate", "invalid_request"),
    ],
)
def test_bad_job_specs(client_module, chat_file, body, status, param, code) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(create(client_module, **{"training_file": chat_file, **body}), status, param, code)
    assert param.split(".")[-1] in error["message"] or status == 404 or code == "model_not_found"


def test_missing_fields_and_bad_json(client_module) -> None:  # type: ignore[no-untyped-def]
    assert_error(client_module.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama"}), 400, "training_file")
    bad = client_module.post("/v1/fine_tuning/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert "not valid JSON" in assert_error(bad, 400)["message"]


def test_a_file_that_failed_validation_cannot_train(client_module) -> None:  # type: ignore[no-untyped-def]
    bad_id = upload(client_module, jsonl(chat(), b"{broken")).json()["error"]["file"]["id"]
    error = assert_error(create(client_module, training_file=bad_id), 400, "training_file", "invalid_file")
    assert "line 2" in error["message"] and error["details"][0]["line"] == 2


def test_unknown_job_ids_are_404(client_module) -> None:  # type: ignore[no-untyped-def]
    base = "/v1/fine_tuning/jobs/ftjob-nope"
    for path in ("", "/events", "/events/stream", "/metrics", "/artifacts/adapter"):
        assert_error(client_module.get(base + path), 404, code="not_found")
    assert_error(client_module.post(base + "/cancel"), 404, code="not_found")
    assert_error(client_module.get("/v1/no-such-route"), 404)


def test_listing_pages_newest_first(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    ids = [create(client_module, training_file=chat_file).json()["id"] for _ in range(3)]
    for job_id in ids:
        client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    first = client_module.get("/v1/fine_tuning/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"]
    second = client_module.get("/v1/fine_tuning/jobs", params={"limit": 1, "after": first["last_id"]}).json()
    assert [j["id"] for j in second["data"]] == [ids[0]]
    assert_error(client_module.get("/v1/fine_tuning/jobs", params={"limit": 0}), 400, "limit")


def test_only_legal_transitions_happen(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    job_id = create(client_module, training_file=chat_file).json()["id"]
    with session_scope() as session:
        assert not transition(session, job_id, JobStatus.SUCCEEDED)  # queued cannot succeed
        assert transition(session, job_id, JobStatus.FAILED, error={"code": "x", "message": "y", "param": None})
        assert not transition(session, job_id, JobStatus.RUNNING)  # terminal stays terminal
    assert client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "failed"


def test_models_lists_the_tiny_model(client_module) -> None:  # type: ignore[no-untyped-def]
    models = client_module.get("/v1/models").json()
    assert "tiny-llama" in [m["id"] for m in models["data"]]
