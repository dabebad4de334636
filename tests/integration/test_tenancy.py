"""Organizations kept apart, API keys, quotas and refused unsafe input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from api.app import create_app
from core.db import session_scope
from core.models import ApiKey
from core.settings import get_settings
from tests.conftest import OTHER_ORG, ROOT, TEST_ORG, make_client
from tests.helpers import (
    EXAMPLES,
    assert_error,
    chat,
    fresh_org,
    jsonl,
    stored_checkpoint,
    succeeded_job,
    unsent_evaluation,
    unsent_merge,
    upload,
    upload_ok,
)

PATH_PARAMS = {"file_id", "fine_tuning_job_id", "kind", "checkpoint_id", "merge_id", "model", "evaluation_id"}


def routes_with_ids() -> list[tuple[str, str, list[str]]]:
    """Every (method, path) of the app that addresses an object by id, with its required
    query parameters, from its OpenAPI description (generated from the routes, so a new
    endpoint cannot be forgotten)."""
    paths = create_app().openapi()["paths"]
    return [
        (
            method.upper(),
            path,
            [p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p["required"]],
        )
        for path, operations in paths.items()
        if set(re.findall(r"{(\w+)}", path)) & PATH_PARAMS
        for method, operation in operations.items()
    ]


def test_every_endpoint_that_takes_an_id_hides_other_organizations_objects(client_module, chat_file, api_keys) -> None:  # type: ignore[no-untyped-def]
    job = client_module.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file}).json()
    client_module.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    model = succeeded_job(TEST_ORG, chat_file)
    ids = {
        "file_id": chat_file,
        "fine_tuning_job_id": job["id"],
        "kind": "adapter",
        "checkpoint_id": stored_checkpoint(job["id"]),
        "merge_id": unsent_merge(TEST_ORG, model),
        "model": model,
        "evaluation_id": unsent_evaluation(TEST_ORG, model.rsplit(":", 1)[1], chat_file),
    }
    routes = routes_with_ids()
    assert len(routes) >= 10  # a new route with an id joins this matrix by itself
    with make_client(api_keys[OTHER_ORG]) as intruder:
        for method, path, required in routes:
            url = re.sub(r"{(\w+)}", lambda m: ids[m.group(1)], path)
            # (the preview's required `model`; a parameter a route does not take is a 400)
            response = intruder.request(method, url, params=dict.fromkeys(required, "tiny-llama"))
            error = assert_error(response, 404)
            assert error["code"] in ("not_found", "model_not_found"), (method, path, error)
            assert error["param"] in ("file_id", "fine_tuning_job_id", "merge_id", "model"), (method, path, error)
        # Nor can another organization's checkpoint be the start of a job.
        own_file = upload_ok(intruder, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
        spec = {"model": "tiny-llama", "training_file": own_file, "from_checkpoint": ids["checkpoint_id"]}
        assert assert_error(intruder.post("/v1/fine_tuning/jobs", json=spec), 404)["param"] == "from_checkpoint"
        # Nor another organization's fine-tuned model the model of a job.
        spec = {"model": ids["model"], "training_file": own_file}
        assert assert_error(intruder.post("/v1/fine_tuning/jobs", json=spec), 404)["param"] == "model"
        assert chat_file not in [f["id"] for f in intruder.get("/v1/files", params={"limit": 100}).json()["data"]]
        # Nor is another organization's id a cursor (which would tell that it exists).
        assert_error(intruder.get("/v1/files", params={"after": chat_file}), 404, param="after")
        listed = intruder.get("/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
        assert job["id"] not in [j["id"] for j in listed]
        assert intruder.get("/v1/merges").json()["data"] == []
    # The owner's objects survived the intruder's DELETE and cancel attempts.
    assert client_module.get(f"/v1/files/{chat_file}").status_code == 200
    assert client_module.get(f"/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "cancelled"
    assert client_module.get(f"/v1/models/{ids['model']}").status_code == 200
    assert client_module.get(f"/v1/merges/{ids['merge_id']}").json()["status"] == "queued"
    evaluation = f"/v1/fine_tuning/jobs/{ids['model'].rsplit(':', 1)[1]}/evaluations/{ids['evaluation_id']}"
    assert client_module.post(f"{evaluation}/cancel").json()["status"] == "cancelled"  # was queued; no worker runs it


def test_key_lifecycle_and_hashing(tiny_model: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    created = subprocess.run(
        [sys.executable, "-m", "ftsvc.cli", "create-org", "research"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    key = re.search(r"ftsk-[\w-]{43}", created).group(0)  # type: ignore[union-attr]
    key_id = re.search(r"API key (key-\w+)", created).group(1)  # type: ignore[union-attr]
    with make_client(key) as client:
        assert client.get("/v1/models").status_code == 200
        subprocess.run(
            [sys.executable, "-m", "ftsvc.cli", "revoke-key", key_id], check=True, env=env, capture_output=True
        )
        # An API process may accept a key it has just seen for auth_cache_seconds more.
        deadline = time.monotonic() + get_settings().auth_cache_seconds + 1
        while (revoked := client.get("/v1/models")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert_error(revoked, 401, code="invalid_api_key")
        assert revoked.headers["www-authenticate"] == "Bearer" and key not in revoked.text
    with make_client(None) as anonymous:
        assert_error(anonymous.get("/v1/files"), 401, code="missing_api_key")
        assert_error(anonymous.get("/v1/files", headers={"Authorization": "Basic abc"}), 401, code="missing_api_key")
        assert_error(
            anonymous.get("/v1/files", headers={"Authorization": "Bearer ftsk-forged"}), 401, code="invalid_api_key"
        )
        assert anonymous.get("/healthz").status_code == 200
    with session_scope() as session:
        stored = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
        assert stored is not None and stored.revoked_at is not None
        assert key not in (stored.hash, stored.prefix, stored.name) and stored.prefix == key[:12]
        assert len(stored.hash) == 64 and key[12:] not in stored.hash


def test_active_jobs_quota_is_hit_and_released(tiny_model: Path) -> None:
    settings = get_settings()
    _, key = fresh_org("quota-jobs")
    limit, settings.max_active_jobs_per_org = settings.max_active_jobs_per_org, 2
    try:
        with make_client(key) as client:
            file_id = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes())
            body = {"model": "tiny-llama", "training_file": file_id, "qlora": {"training": {"max_steps": 5000}}}
            jobs = [client.post("/v1/fine_tuning/jobs", json=body).json()["id"] for _ in range(2)]
            error = assert_error(client.post("/v1/fine_tuning/jobs", json=body), 429, code="active_jobs_quota_exceeded")
            assert "limit of concurrent jobs" in error["message"]
            client.post(f"/v1/fine_tuning/jobs/{jobs[0]}/cancel")
            third = client.post("/v1/fine_tuning/jobs", json=body)
            assert third.status_code == 200, third.text
            for job_id in (jobs[1], third.json()["id"]):
                client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    finally:
        settings.max_active_jobs_per_org = limit


def test_storage_quota_is_hit_while_streaming_and_released(tiny_model: Path) -> None:
    settings = get_settings()
    org_id, key = fresh_org("quota-bytes")
    content = jsonl(*[chat(f"question {i}", "answer") for i in range(40)])
    quota, settings.max_stored_bytes_per_org = settings.max_stored_bytes_per_org, int(len(content) * 1.5)
    try:
        with make_client(key) as client:
            first = upload_ok(client, content)
            error = assert_error(upload(client, content), 403, param="file", code="storage_quota_exceeded")
            assert "storage quota" in error["message"]
            assert [f["id"] for f in client.get("/v1/files").json()["data"]] == [first]  # nothing half-stored
            client.delete(f"/v1/files/{first}")
            upload_ok(client, content)
    finally:
        settings.max_stored_bytes_per_org = quota


@pytest.fixture
def model_dir(tiny_model: Path):  # type: ignore[no-untyped-def]
    made: list[Path] = []

    def copy(name: str) -> Path:
        target = tiny_model.parent / name
        shutil.copytree(tiny_model, target, dirs_exist_ok=True)
        made.append(target)
        return target

    yield copy
    for path in made:
        shutil.rmtree(path)


def test_models_that_need_remote_code_or_pickles_are_refused(client, chat_file, model_dir) -> None:  # type: ignore[no-untyped-def]
    remote = model_dir("remote-code-llama")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps(config | {"auto_map": {"AutoModelForCausalLM": "evil.Model"}}))
    error = assert_error(
        client.post("/v1/fine_tuning/jobs", json={"model": "remote-code-llama", "training_file": chat_file}),
        400,
        "model",
        "remote_code_refused",
    )
    assert "trust_remote_code" in error["message"]
    pickled = model_dir("pickled-llama")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    error = assert_error(
        client.post("/v1/fine_tuning/jobs", json={"model": "pickled-llama", "training_file": chat_file}),
        400,
        "model",
        "unsafe_weights_refused",
    )
    assert "pytorch_model.bin" in error["message"]


def test_unsafe_names_and_oversized_strings_are_refused(client, chat_file) -> None:  # type: ignore[no-untyped-def]
    body = upload(client, jsonl(chat()), filename="../../../etc/cron.d/evil.jsonl").json()
    assert body["filename"] == "evil.jsonl"
    stored = [p for p in (get_settings().storage_root / "files").iterdir() if p.name == body["id"]]
    assert len(stored) == 1
    cases = [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"suffix": "../escape"}, "suffix"),
        ({"suffix": "x" * 65}, "suffix"),
    ]
    for extra, param in cases:
        response = client.post(
            "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file, **extra}
        )
        assert_error(response, 400)
        assert response.json()["error"]["param"].startswith(param), (extra, response.json())
