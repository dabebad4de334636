"""Property-based fuzzing of the whole API from its own OpenAPI description
(schemathesis): every operation gets generated requests, valid and invalid, and no
answer may be a 5xx or differ from what /openapi.json declares (status code, content
type, body schema).

CI runs a bounded number of examples per operation (FUZZ_EXAMPLES) with a fixed seed
(FUZZ_SEED), so a run is reproducible. A longer run, with another seed:

    FUZZ_EXAMPLES=1000 FUZZ_SEED=$RANDOM ./scripts/test tests/integration/test_openapi_fuzz.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st

from api.app import create_app
from core import files
from core.db import session_scope
from core.ids import new_id
from core.storage import StoredObject, get_storage
from tests.conftest import TEST_ORG
from tests.helpers import EXAMPLES, assert_error, changed_settings, succeeded_job, unsent_merge, upload_ok

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
FUZZ_SEED = int(os.environ.get("FUZZ_SEED", "1"))


@pytest.fixture(scope="module")
def real_ids(client_module, chat_file) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """Objects that exist, so that generated requests get past the 404 of an unknown id."""
    job = client_module.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file})
    assert job.status_code == 200, job.text
    # A webhook, with a delivery: the succeeded job's (no worker in these tests sends it).
    with changed_settings(FTSVC_WEBHOOK_ALLOWED_NETWORKS="192.0.2.1/32"):  # TEST-NET-1: goes nowhere
        webhook = client_module.post("/v1/organization/webhooks", json={"url": "https://192.0.2.1/hooks"})
    model = succeeded_job(TEST_ORG, chat_file)
    webhook_id = webhook.json()["id"]
    yield {
        "file_id": chat_file,
        "fine_tuning_job_id": job.json()["id"],
        "kind": "adapter",
        "model": model,
        "merge_id": unsent_merge(TEST_ORG, model),
        "webhook_id": webhook_id,
        "delivery_id": client_module.get(f"/v1/organization/webhooks/{webhook_id}/deliveries").json()["data"][0]["id"],
    }
    # Webhooks the fuzzer registered would be sent later tests' events.
    for created in client_module.get("/v1/organization/webhooks", params={"limit": 100}).json()["data"]:
        client_module.delete(f"/v1/organization/webhooks/{created['id']}")
    # The merges the fuzzer made were sent to the training queue: a later test's worker
    # drops the messages of cancelled ones at the cost of one query.
    for merge in client_module.get("/v1/merges", params={"limit": 100}).json()["data"]:
        if merge["status"] == "queued":
            client_module.post(f"/v1/merges/{merge['id']}/cancel")


def _sometimes(value: dict[str, Any] | None, real: dict[str, Any]) -> st.SearchStrategy:
    """The generated value, or the same with `real`'s entries in place of its own."""
    return st.sampled_from([value, {**value, **real}]) if value and real else st.just(value)


@pytest.fixture(scope="module")
def api_schema(api_keys: dict[str, str], real_ids: dict[str, str]) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": FUZZ_SEED,
            "headers": {"Authorization": f"Bearer {api_keys[TEST_ORG]}"},
            "generation": {"mode": "all", "max-examples": FUZZ_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            # A job's event stream lasts as long as the job: its first events are enough.
            "max-stream-events": 2,
            "request-timeout": 5,
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=config)
    datasets = [path.read_bytes() for path in sorted(EXAMPLES.iterdir())]

    # Half of the generated requests use real objects, so they reach deeper than validation.
    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy:
        known = {name: real_ids[name] for name in path_parameters or () if name in real_ids}
        return _sometimes(path_parameters, known)

    @schema.hook
    def flatmap_query(context: Any, query: dict[str, Any] | None) -> st.SearchStrategy:
        return _sometimes(query, {"model": "tiny-llama"} if query and "model" in query else {})

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy:
        if not isinstance(body, dict):
            return st.just(body)
        if "training_file" in body:  # a job spec
            return _sometimes(body, {"model": "tiny-llama", "training_file": real_ids["file_id"]})
        if "purpose" in body:  # an upload form
            return st.sampled_from(datasets).flatmap(lambda data: _sometimes(body, {"file": data}))
        return st.just(body)

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_no_server_error_and_every_response_as_documented(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_no_422_of_fastapis_own_is_documented() -> None:
    # Validation errors are 400 in the error shape: FastAPI's 422 body is never sent.
    assert "HTTPValidationError" not in json.dumps(create_app().openapi())


# Inputs that answered 500 before they were fixed. The fuzzer found the adapter; it cannot
# send the others (it removes control characters from paths, and its multipart bodies are
# well-formed), so they are kept here.
@pytest.mark.parametrize(
    ("method", "url", "kwargs", "param"),
    [
        ("GET", "/v1/files/file-x%00", {}, "file_id"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-x%00/events", {}, "fine_tuning_job_id"),
        ("GET", "/v1/files", {"params": {"after": "file-\x00"}}, "after"),
        ("GET", "/v1/files", {"params": {"purpose": "\x00"}}, "purpose"),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"json": {"model": "tiny-llama", "training_file": "file-\x00"}},
            "training_file",
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"json": {"model": "tiny-llama", "training_file": "f", "from_checkpoint": "ftckpt-\x00"}},
            "from_checkpoint",
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"json": {"model": "m", "training_file": "f", "qlora": {"adapter": []}}},
            "qlora.adapter",
        ),
        (
            "POST",
            "/v1/files",
            {"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
            "file",
        ),
    ],
)
def test_inputs_that_were_server_errors_are_refused(
    client, method: str, url: str, kwargs: dict[str, Any], param: str
) -> None:  # type: ignore[no-untyped-def]
    assert_error(client.request(method, url, **kwargs), 400, param=param)


def test_a_download_keeps_a_file_name_that_is_not_latin_1(client) -> None:  # type: ignore[no-untyped-def]
    """Header values are latin-1: such a name made the download a 500."""
    file_id = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "داده v2.jsonl")
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''%D8%AF%D8%A7%D8%AF%D9%87%20v2.jsonl"


def test_a_results_file_cannot_be_previewed(client) -> None:  # type: ignore[no-untyped-def]
    """A job's results file holds metrics, not examples (its preview was a 500)."""
    file_id = new_id("file")
    with get_storage().writer(f"files/{file_id}") as out:
        out.write(b"step,train_loss\n1,2.0\n")
    with session_scope() as session:
        stored = StoredObject(f"files/{file_id}", out.bytes, out.sha256)
        files.register_result(session, TEST_ORG, file_id, "step_metrics.csv", stored)
    response = client.get(f"/v1/files/{file_id}/preview", params={"model": "tiny-llama"})
    assert_error(response, 400, param="file_id", code="invalid_file")
