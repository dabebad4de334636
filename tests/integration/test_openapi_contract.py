"""What /openapi.json promises about every operation (a typed body for each success, the
bearer key, the error body for each failure), and that real objects fetched from the API
are exactly their documented models."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.app import create_app
from api.openapi import ModelRoute
from api.routes import files, jobs, models, organization
from api.schemas import (
    CheckpointObject,
    DeletedCheckpoint,
    DeletedJob,
    FileObject,
    FilePreview,
    JobEventObject,
    JobObject,
    ListPage,
    MetricPoint,
    ModelObject,
    OrganizationUsage,
)
from core.auth import create_key, revoke_key
from core.db import session_scope
from core.events import record_metric
from tests.conftest import TEST_ORG, make_client
from tests.helpers import EXAMPLES, assert_error, stored_checkpoint, wait_for

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in openapi["paths"].items() for method, op in ops.items()]


def test_every_json_success_has_a_typed_schema(openapi: dict[str, Any]) -> None:
    documented = 0
    for method, path, op in operations(openapi):
        for status, response in op["responses"].items():
            if not status.startswith("2") or "application/json" not in response.get("content", {}):
                continue
            schema = response["content"]["application/json"].get("schema", {})
            assert "$ref" in schema or "type" in schema, f"{method} {path} {status}: {schema}"
            documented += 1
    assert documented >= 16


def test_every_operation_but_health_takes_the_bearer_key_and_documents_its_errors(openapi: dict[str, Any]) -> None:
    # /healthz and /readyz answer load balancers and orchestrators, which hold no API key.
    schemes = openapi["components"]["securitySchemes"]
    bearer = [name for name, scheme in schemes.items() if (scheme["type"], scheme.get("scheme")) == ("http", "bearer")]
    assert len(bearer) == 1, schemes
    for method, path, op in operations(openapi):
        if path in ("/healthz", "/readyz"):
            assert "security" not in op
            continue
        assert op.get("security") == [{bearer[0]: []}], f"{method} {path}"
        failures = {status: r for status, r in op["responses"].items() if status[0] in "45"}
        assert {"401", "500"} <= set(failures), f"{method} {path}: {sorted(failures)}"
        for status, response in failures.items():
            assert response["content"]["application/json"]["schema"] == ERROR_BODY, f"{method} {path} {status}"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("Basic abc", "missing_api_key"),
        ("Bearer ", "missing_api_key"),
        ("bearer ftsk-forged", "invalid_api_key"),
        ("Bearer  ftsk-forged ", "invalid_api_key"),
    ],
)
def test_the_documented_scheme_keeps_the_401_answers(authorization: str | None, code: str) -> None:
    with make_client(None) as anonymous:
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = anonymous.get("/v1/models", headers=headers)
    assert_error(response, 401, param=None, code=code)
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_key_is_read_as_before_and_a_revoked_one_refused(api_keys: dict[str, str]) -> None:
    with session_scope() as session:
        row, revoked = create_key(session, TEST_ORG, "to-revoke")
        revoke_key(session, row.id)
    with make_client(None) as anonymous:
        spaced = {"Authorization": f"bearer   {api_keys[TEST_ORG]} "}
        assert anonymous.get("/v1/models", headers=spaced).status_code == 200
        response = anonymous.get("/v1/models", headers={"Authorization": f"Bearer {revoked}"})
    assert_error(response, 401, code="invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"


def test_no_route_validates_its_answer_a_second_time() -> None:
    # The documented model is not FastAPI's response_model: nothing re-validates the
    # returned value after the route returns (the deadlock of the README's design note).
    for module in (files, jobs, models, organization):
        for route in module.router.routes:
            assert isinstance(route, ModelRoute)
            assert route.response_model is None and route.response_field is None, route.path


def exactly(model: type[BaseModel], response: Any) -> BaseModel:
    """The answer is the model's own serialization of itself: its fields, types and
    values, nothing more."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    value = model.model_validate_json(response.content, strict=True)
    assert value.model_dump_json().encode() == response.content
    return value


def test_real_objects_are_their_models(client_module: TestClient, chat_file: str) -> None:
    client = client_module
    exactly(FileObject, client.get(f"/v1/files/{chat_file}"))
    exactly(ListPage[FileObject], client.get("/v1/files"))
    preview = exactly(FilePreview, client.get(f"/v1/files/{chat_file}/preview", params={"model": "tiny-llama"}))
    assert isinstance(preview, FilePreview) and preview.data and preview.data[0].segments

    created = exactly(
        JobObject, client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file})
    )
    assert isinstance(created, JobObject) and created.status == "validating_files"
    job_id = created.id
    wait_for(client, job_id, {"queued"})  # the pre-flight worker computed its statistics
    stored_checkpoint(job_id, step=2)
    with session_scope() as session:  # a point of the loss curve, as a worker records one
        record_metric(session, job_id, 1, {"epoch": 0.5, "loss": 2.5, "learning_rate": 1e-5, "tokens_seen": 64})
    job = exactly(JobObject, client.get(f"/v1/fine_tuning/jobs/{job_id}"))
    assert isinstance(job, JobObject) and job.status == "queued" and job.statistics is not None  # no training worker
    exactly(ListPage[JobObject], client.get("/v1/fine_tuning/jobs"))
    events = exactly(ListPage[JobEventObject], client.get(f"/v1/fine_tuning/jobs/{job_id}/events"))
    assert isinstance(events, ListPage) and {e.type for e in events.data} == {"message", "metrics"}
    page = exactly(ListPage[CheckpointObject], client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints"))
    assert isinstance(page, ListPage) and [c.step_number for c in page.data] == [2]
    metrics = exactly(ListPage[MetricPoint], client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics"))
    assert isinstance(metrics, ListPage) and [(m.step, m.loss) for m in metrics.data] == [(1, 2.5)]
    exactly(JobObject, client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel"))
    exactly(OrganizationUsage, client.get("/v1/organization/usage"))
    deleted = exactly(DeletedCheckpoint, client.delete(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{page.data[0].id}"))
    assert isinstance(deleted, DeletedCheckpoint) and deleted.id == page.data[0].id
    exactly(DeletedJob, client.delete(f"/v1/fine_tuning/jobs/{job_id}"))

    exactly(ListPage[ModelObject], client.get("/v1/models"))
    exactly(ModelObject, client.get("/v1/models/tiny-llama"))


def test_a_replay_is_the_first_answer_byte_for_byte(client_module: TestClient, chat_file: str) -> None:
    client = client_module
    headers = {"Idempotency-Key": "contract-job"}
    body = {"model": "tiny-llama", "training_file": chat_file, "qlora": {"training": {"learning_rate": 1e-5}}}
    first = client.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    again = client.post("/v1/fine_tuning/jobs", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.content == first.content and again.headers["content-type"] == first.headers["content-type"]
    client.post(f"/v1/fine_tuning/jobs/{first.json()['id']}/cancel")

    content = (EXAMPLES / "chat.jsonl").read_bytes()
    first, again = (
        client.post(
            "/v1/files",
            files={"file": ("chat.jsonl", content)},
            data={"purpose": "fine-tune"},
            headers={"Idempotency-Key": "contract-upload"},
        )
        for _ in range(2)
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content and again.headers["content-type"] == first.headers["content-type"]
