"""Merges through the API without a worker: the routing of fine-tuned model names, the
merge object and its log, and every refusal (what cannot merge, another organization's
model, bad bodies, names already taken). tests/integration/test_merge_e2e.py runs them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import merge_runs
from core.db import session_scope
from core.job_creation import create_job
from core.settings import get_settings
from core.specs import JobSpec
from core.storage import StoredObject, get_storage
from tests.conftest import OTHER_ORG, TEST_ORG, make_client
from tests.helpers import assert_error, stored_checkpoint, succeeded_job, unsent_merge, unsent_queued_job


@pytest.fixture(scope="module", autouse=True)
def no_merge_left_queued(client_module: TestClient) -> Iterator[None]:
    """Merges made here are sent to the training queue: cancelled at the end, a worker
    of a later test drops their messages at the cost of one query."""
    yield
    for merge in client_module.get("/v1/merges", params={"limit": 100}).json()["data"]:
        if merge["status"] == "queued":
            client_module.post(f"/v1/merges/{merge['id']}/cancel")


@pytest.fixture(scope="module")
def model_name(chat_file: str) -> str:
    return succeeded_job(TEST_ORG, chat_file)


def merge(client: TestClient, model: str, **body: Any) -> Any:
    return client.post(f"/v1/models/{model}/merge", json=body or None)


def test_a_fine_tuned_model_name_routes_to_its_merge(client_module: TestClient, model_name: str) -> None:
    created = merge(client_module, model_name)
    assert created.status_code == 200, created.text
    body = created.json()
    job_id = model_name.rsplit(":", 1)[1]
    assert body["object"] == "model.merge" and body["status"] == "queued"
    assert (body["model"], body["fine_tuning_job_id"], body["checkpoint_id"]) == (model_name, job_id, None)
    assert (body["base_model"], body["adapter_type"], body["dtype"]) == ("tiny-llama", "lora", "auto")
    assert body["base_weights"] == "original"
    assert body["archive"] is None and body["error"] is None and body["register_as"] is None
    # Names with colons, and a hub base model's slash, reach the merge route (its 404, not the router's).
    for missing in ("ft:tiny-llama:org-test:ftjob-missing", "ft:owner/name:org-test:ftjob-missing"):
        assert_error(merge(client_module, missing), 404, param="model", code="model_not_found")


def test_a_merge_has_a_log_and_no_content_until_it_succeeds(client_module: TestClient, model_name: str) -> None:
    merge_id = merge(client_module, model_name).json()["id"]
    assert client_module.get(f"/v1/merges/{merge_id}").json()["status"] == "queued"
    assert merge_id in [m["id"] for m in client_module.get("/v1/merges").json()["data"]]
    log = client_module.get(f"/v1/merges/{merge_id}/events").json()["data"]
    assert log[-1]["object"] == "model.merge.event" and "queued" in log[-1]["message"]
    assert_error(client_module.get(f"/v1/merges/{merge_id}/content"), 409, code="merge_not_succeeded")
    cancelled = client_module.post(f"/v1/merges/{merge_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert_error(client_module.post(f"/v1/merges/{merge_id}/cancel"), 409, code="merge_not_cancellable")
    assert "cancelled" in client_module.get(f"/v1/merges/{merge_id}/events").json()["data"][0]["message"]
    assert_error(client_module.get("/v1/merges/ftmerge-missing"), 404, param="merge_id", code="not_found")
    assert_error(client_module.get("/v1/merges/ftmerge-missing/events"), 404, param="merge_id")


def test_what_cannot_merge_is_409_with_the_reason(client_module: TestClient, chat_file: str, tiny_model) -> None:  # type: ignore[no-untyped-def]
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    unfinished = f"ft:tiny-llama:{TEST_ORG}:{job_id}"
    error = assert_error(merge(client_module, unfinished), 409, param="model", code="model_not_ready")
    assert "queued" in error["message"]
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")

    for prompt_learning in ("prompt_tuning", "prefix_tuning", "p_tuning"):
        prompt = succeeded_job(TEST_ORG, chat_file, qlora={"adapter": {"type": prompt_learning}})
        error = assert_error(merge(client_module, prompt), 409, param="model", code="adapter_not_mergeable")
        assert f"a {prompt_learning} adapter" in error["message"] and "virtual tokens" in error["message"]

    unquantized = succeeded_job(TEST_ORG, chat_file, qlora={"adapter": {"type": "loha"}})
    assert merge(client_module, unquantized).json()["adapter_type"] == "loha"
    error = assert_error(merge(client_module, unquantized, base_weights="dequantized"), 400, param="base_weights")
    assert error["code"] == "adapter_not_quantized" and "unquantized base" in error["message"]

    gone = tiny_model.parent / "tiny-llama-gone"
    shutil.copytree(tiny_model, gone)
    orphan = succeeded_job(TEST_ORG, chat_file, model=gone.name)
    shutil.rmtree(gone)
    error = assert_error(merge(client_module, orphan), 409, param="model", code="base_model_not_found")
    assert "'tiny-llama-gone' is no longer present" in error["message"]


def test_another_organizations_model_and_merges_are_404(
    client_module: TestClient, model_name: str, api_keys: dict[str, str]
) -> None:
    merge_id = merge(client_module, model_name).json()["id"]
    with make_client(api_keys[OTHER_ORG]) as intruder:
        assert_error(merge(intruder, model_name), 404, param="model", code="model_not_found")
        assert_error(intruder.get(f"/v1/merges/{merge_id}"), 404, param="merge_id")
        assert merge_id not in [m["id"] for m in intruder.get("/v1/merges").json()["data"]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"dtype": "int8"}, "dtype"),
        ({"register_as": "a/b"}, "register_as"),
        ({"register_as": "ft:x"}, "register_as"),
        ({"register_as": ""}, "register_as"),
        ({"registerAs": "x"}, "registerAs"),
        ({"base_weights": "quantized"}, "base_weights"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(
    client_module: TestClient, model_name: str, body: dict[str, Any], param: str
) -> None:
    assert_error(merge(client_module, model_name, **body), 400, param=param)


def test_a_registered_name_names_one_model_of_the_organization(client_module: TestClient, model_name: str) -> None:
    error = assert_error(merge(client_module, model_name, register_as="tiny-llama"), 409, param="register_as")
    assert error["code"] == "model_exists" and "base model of the service" in error["message"]
    error = assert_error(merge(client_module, model_name, register_as="ftckpt-1"), 400, param="register_as")
    assert error["code"] == "invalid_model_name"
    first = merge(client_module, model_name, register_as="mine").json()
    assert first["register_as"] == "mine"
    error = assert_error(merge(client_module, model_name, register_as="mine"), 409, code="model_exists")
    assert first["id"] in error["message"]
    client_module.post(f"/v1/merges/{first['id']}/cancel")  # a cancelled merge frees its name
    assert merge(client_module, model_name, register_as="mine").status_code == 200
    # Listed as a base model only once its merge succeeded (test_merge_e2e.py).
    assert "mine" not in [m["id"] for m in client_module.get("/v1/models").json()["data"]]


def test_a_checkpoint_merges_by_name_and_by_id(client_module: TestClient, chat_file: str) -> None:
    job_id = unsent_queued_job(TEST_ORG, chat_file)  # a checkpoint of a job that has not finished
    checkpoint_id = stored_checkpoint(job_id, step=3)
    name = f"ft:tiny-llama:{TEST_ORG}:{job_id}:ckpt-step-3"
    for given in (name, checkpoint_id):
        body = merge(client_module, given).json()
        assert (body["model"], body["checkpoint_id"], body["fine_tuning_job_id"]) == (name, checkpoint_id, job_id)
    assert_error(merge(client_module, f"{name[:-1]}4"), 404, param="model")
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_a_retry_with_its_idempotency_key_gets_the_first_merge(client_module: TestClient, model_name: str) -> None:
    headers = {"Idempotency-Key": "merge-retry-1"}
    first = client_module.post(f"/v1/models/{model_name}/merge", json={"dtype": "float32"}, headers=headers)
    again = client_module.post(f"/v1/models/{model_name}/merge", json={"dtype": "float32"}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    other = client_module.post(f"/v1/models/{model_name}/merge", json={"dtype": "bfloat16"}, headers=headers)
    assert_error(other, 422, code="idempotency_key_reused")


def test_a_job_or_checkpoint_being_merged_is_not_deleted(client_module: TestClient, chat_file: str) -> None:
    name = succeeded_job(TEST_ORG, chat_file)
    job_id = name.rsplit(":", 1)[1]
    checkpoint_id = stored_checkpoint(job_id, step=2)
    merges = [merge(client_module, model).json()["id"] for model in (name, checkpoint_id)]
    job_url = f"/v1/fine_tuning/jobs/{job_id}"
    error = assert_error(client_module.delete(f"{job_url}/checkpoints/{checkpoint_id}"), 409, code="merge_in_progress")
    assert merges[1] in error["message"]
    assert_error(client_module.delete(job_url), 409, code="merge_in_progress")
    for merge_id in merges:
        client_module.post(f"/v1/merges/{merge_id}/cancel")
    assert client_module.delete(f"{job_url}/checkpoints/{checkpoint_id}").status_code == 200
    assert client_module.delete(job_url).status_code == 200


def test_a_merge_is_refused_at_the_storage_quota(client_module: TestClient, model_name: str) -> None:
    settings = get_settings()
    limit = settings.max_stored_bytes_per_org
    settings.max_stored_bytes_per_org = client_module.get("/v1/organization/usage").json()["storage"]["used_bytes"]
    try:
        error = assert_error(merge(client_module, model_name), 403, code="storage_quota_exceeded")
    finally:
        settings.max_stored_bytes_per_org = limit
    assert error["message"].startswith("A merged model would exceed the organization's storage quota")


def test_a_finished_merge_is_deleted_with_its_log(client_module: TestClient, model_name: str) -> None:
    merge_id = merge(client_module, model_name).json()["id"]
    assert_error(client_module.delete(f"/v1/merges/{merge_id}"), 409, code="merge_not_finished")
    client_module.post(f"/v1/merges/{merge_id}/cancel")
    deleted = client_module.delete(f"/v1/merges/{merge_id}")
    assert deleted.json() == {"id": merge_id, "object": "model.merge", "deleted": True}
    for path in ("", "/events", "/content"):
        assert_error(client_module.get(f"/v1/merges/{merge_id}{path}"), 404, param="merge_id")
    assert_error(client_module.delete(f"/v1/merges/{merge_id}"), 404, param="merge_id")


def test_a_registered_model_goes_with_its_merge_once_nothing_uses_it(
    client_module: TestClient, model_name: str, chat_file: str
) -> None:
    merge_id = unsent_merge(TEST_ORG, model_name, register_as="in-use")
    key = f"merges/{merge_id}/attempt-1/in-use.tar"
    with get_storage().writer(key) as out:
        out.write(b"a merged model")
    with session_scope() as session:  # as its worker publishes it
        assert merge_runs.claim(session, merge_id, "worker", "host") is not None
        assert merge_runs.succeed(session, merge_id, "worker", "in-use.tar", StoredObject(key, 14, "0" * 64), "ok")
    assert "in-use" in [m["id"] for m in client_module.get("/v1/models").json()["data"]]
    with session_scope() as session:  # a job on it, waiting for its pre-flight
        job_id = create_job(session, TEST_ORG, JobSpec(model="in-use", training_file=chat_file)).id

    error = assert_error(client_module.delete(f"/v1/merges/{merge_id}"), 409, code="model_in_use")
    assert f"job {job_id} trains on it" in error["message"]
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert client_module.delete(f"/v1/merges/{merge_id}").status_code == 200
    assert "in-use" not in [m["id"] for m in client_module.get("/v1/models").json()["data"]]
    assert not (get_settings().storage_root / "merges" / merge_id).exists()
    spec = {"model": "in-use", "training_file": chat_file}
    assert_error(client_module.post("/v1/fine_tuning/jobs", json=spec), 400, param="model", code="model_not_found")
