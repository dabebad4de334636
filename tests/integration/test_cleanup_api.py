"""Deleting jobs and checkpoints (rows and bytes), the storage quota over every kind of
stored object, the usage endpoint, rejected uploads that expire, and the job spec's
`integrations`. Jobs are put in each state with the functions workers use (claim,
end_run, publish_success); no training here (tests/integration/test_tracking.py trains)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core import files, leases
from core.db import session_scope
from core.events import record_metric
from core.job_creation import create_job
from core.jobs import get_job
from core.settings import get_settings
from core.specs import JobSpec
from core.storage import get_storage
from tests.conftest import OTHER_ORG, make_client
from tests.helpers import (
    EXAMPLES,
    assert_error,
    assert_mlflow_matches,
    assert_tensorboard_matches,
    fresh_org,
    stored_checkpoint,
    stored_keys,
    stored_size,
    unsent_queued_job,
    upload,
    upload_ok,
    usage,
)
from worker.publish import publish_success

CHAT = (EXAMPLES / "chat.jsonl").read_bytes()
CHECKPOINT_BYTES = 2 * len(b"adapter")  # stored_checkpoint's adapter and state
OWNER = "test-worker:1"


@pytest.fixture
def org(tiny_model: Path) -> Iterator[tuple[str, TestClient]]:
    """A new organization (its usage starts at zero) and a client acting for it."""
    org_id, key = fresh_org("cleanup")
    with make_client(key) as client:
        yield org_id, client


@pytest.fixture
def quota() -> Iterator[None]:
    settings = get_settings()
    limit, retention = settings.max_stored_bytes_per_org, settings.rejected_file_retention_seconds
    yield
    settings.max_stored_bytes_per_org, settings.rejected_file_retention_seconds = limit, retention


def running(job_id: str) -> int:
    """The queued job claimed as a worker claims it; returns the attempt."""
    with session_scope() as session:
        claim = leases.claim(session, job_id, OWNER, "test-host")
    assert claim is not None
    return claim.attempt


def released(job_id: str, attempt: int) -> None:
    """The worker lets go of its cancelled job, as a stopping worker does."""
    with session_scope() as session:
        leases.end_run(session, job_id, OWNER, attempt, "cancelled")


def validating_job(org_id: str, file_id: str) -> str:
    with session_scope() as session:
        return create_job(session, org_id, JobSpec(model="tiny-llama", training_file=file_id)).id


def test_usage_counts_every_kind_of_stored_object_but_rejected_uploads(org: tuple[str, TestClient]) -> None:
    org_id, client = org
    empty = usage(client)
    assert empty["object"] == "organization.usage" and empty["organization_id"] == org_id
    assert empty["storage"] == {
        "limit_bytes": get_settings().max_stored_bytes_per_org,
        "used_bytes": 0,
        "available_bytes": get_settings().max_stored_bytes_per_org,
        "by_kind": {"uploads": 0, "result_files": 0, "checkpoints": 0, "adapters": 0, "merged_models": 0},
        "rejected_uploads_bytes": 0,
    }
    upload_ok(client, CHAT)
    rejected = b'{"oops": 1}\n'
    assert_error(upload(client, rejected), 400, code="invalid_file")
    stored_checkpoint(unsent_queued_job(org_id, upload_ok(client, CHAT)))
    storage = usage(client)["storage"]
    assert storage["by_kind"] == {
        "uploads": 2 * len(CHAT),
        "result_files": 0,
        "checkpoints": CHECKPOINT_BYTES,
        "adapters": 0,
        "merged_models": 0,
    }
    assert storage["used_bytes"] == 2 * len(CHAT) + CHECKPOINT_BYTES
    assert storage["rejected_uploads_bytes"] == len(rejected)
    assert usage(client)["jobs"] == {"active": 1, "limit": get_settings().max_active_jobs_per_org}


def test_training_outputs_count_against_the_quota_and_deleting_them_makes_room(
    org: tuple[str, TestClient], quota: None
) -> None:
    org_id, client = org
    settings = get_settings()
    settings.max_stored_bytes_per_org = 2 * len(CHAT) + 5
    job_id = unsent_queued_job(org_id, upload_ok(client, CHAT))
    checkpoint = stored_checkpoint(job_id)
    # Room is left for 5 bytes less than the file, because of the checkpoint.
    error = assert_error(upload(client, CHAT), 403, param="file", code="storage_quota_exceeded")
    assert f"checkpoints {CHECKPOINT_BYTES}" in error["message"] and "/v1/organization/usage" in error["message"]
    assert usage(client)["storage"]["available_bytes"] == len(CHAT) + 5 - CHECKPOINT_BYTES

    settings.max_stored_bytes_per_org = len(CHAT) + CHECKPOINT_BYTES  # exactly what is stored
    body = {"model": "tiny-llama", "training_file": files_of(client)[0]}
    error = assert_error(client.post("/v1/fine_tuning/jobs", json=body), 403, code="storage_quota_exceeded")
    assert error["message"].startswith("A new job's outputs would exceed")

    settings.max_stored_bytes_per_org = 2 * len(CHAT) + 5
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    deleted = client.delete(f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint}")
    assert deleted.status_code == 200, deleted.text
    upload_ok(client, CHAT)  # the checkpoint's bytes were the difference
    assert usage(client)["storage"]["available_bytes"] == 5


def files_of(client: TestClient) -> list[str]:
    return [f["id"] for f in client.get("/v1/files", params={"purpose": "fine-tune"}).json()["data"]]


def test_only_a_finished_job_whose_worker_let_go_can_be_deleted(org: tuple[str, TestClient]) -> None:
    org_id, client = org
    file_id = upload_ok(client, CHAT)
    validating = validating_job(org_id, file_id)
    queued = unsent_queued_job(org_id, file_id)
    paused = unsent_queued_job(org_id, file_id)
    assert client.post(f"/v1/fine_tuning/jobs/{paused}/pause").json()["status"] == "paused"
    run = unsent_queued_job(org_id, file_id)
    attempt = running(run)
    for job_id, status in ((validating, "validating_files"), (queued, "queued"), (paused, "paused"), (run, "running")):
        error = assert_error(client.delete(f"/v1/fine_tuning/jobs/{job_id}"), 409, code="job_not_finished")
        assert f"is {status}" in error["message"] and "cancel it first" in error["message"]
        assert client.get(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200

    # Cancelled, but its worker has not stopped yet (it stops after its current step).
    assert client.post(f"/v1/fine_tuning/jobs/{run}/cancel").json()["status"] == "cancelled"
    error = assert_error(client.delete(f"/v1/fine_tuning/jobs/{run}"), 409, code="job_still_stopping")
    assert "try again" in error["message"]
    released(run, attempt)
    deleted = client.delete(f"/v1/fine_tuning/jobs/{run}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": run, "object": "fine_tuning.job", "deleted": True}
    assert_error(client.get(f"/v1/fine_tuning/jobs/{run}"), 404, param="fine_tuning_job_id")
    assert_error(client.delete(f"/v1/fine_tuning/jobs/{run}"), 404, param="fine_tuning_job_id")
    assert client.get(f"/v1/files/{file_id}").status_code == 200  # the upload is the user's, not the job's
    for job_id in (validating, queued, paused):
        client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
        assert client.delete(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200


def test_another_organizations_job_and_checkpoints_are_not_found(org: tuple[str, TestClient], api_keys) -> None:  # type: ignore[no-untyped-def]
    org_id, client = org
    job_id = unsent_queued_job(org_id, upload_ok(client, CHAT))
    checkpoint = stored_checkpoint(job_id)
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    with make_client(api_keys[OTHER_ORG]) as intruder:
        assert_error(intruder.delete(f"/v1/fine_tuning/jobs/{job_id}"), 404, param="fine_tuning_job_id")
        url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint}"
        assert_error(intruder.delete(url), 404, param="fine_tuning_job_id")
    assert_error(client.delete("/v1/fine_tuning/jobs/ftjob-missing"), 404, param="fine_tuning_job_id")
    assert [c["id"] for c in client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]] == [checkpoint]


def test_deleting_a_finished_job_removes_its_rows_and_every_byte_it_stored(
    org: tuple[str, TestClient], tmp_path: Path
) -> None:
    org_id, client = org
    file_id = upload_ok(client, CHAT)
    job_id = unsent_queued_job(org_id, file_id)
    attempt = running(job_id)
    with session_scope() as session:
        for step, loss in ((1, 2.5), (2, 2.25), (3, 1.875)):
            record_metric(session, job_id, step, {"epoch": step / 3, "loss": loss, "learning_rate": 1e-3})
        record_metric(session, job_id, 3, {"loss": 2.0625}, split="valid")
    stored_checkpoint(job_id, step=1), stored_checkpoint(job_id, step=2)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    with session_scope() as session:
        job = get_job(session, org_id, job_id)
    assert publish_success(get_storage(), job, OWNER, attempt, tmp_path, trained_tokens=10, steps=3)

    job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    results = {client.get(f"/v1/files/{i}").json()["filename"]: i for i in job["result_files"]}
    assert list(results) == ["step_metrics.csv", "tensorboard.tar.gz", "mlflow_metrics.csv"]
    metrics = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert_tensorboard_matches(client.get(f"/v1/files/{results['tensorboard.tar.gz']}/content").content, metrics)
    assert_mlflow_matches(client.get(f"/v1/files/{results['mlflow_metrics.csv']}/content").text, metrics)

    outputs = stored_keys(f"artifacts/{job_id}") | stored_keys(f"checkpoints/{job_id}")
    outputs |= {f"files/{i}" for i in results.values()}
    assert outputs <= stored_keys() and len(outputs) == 1 + 2 + 3
    storage = usage(client)["storage"]
    assert storage["by_kind"] == {
        "uploads": len(CHAT),
        "result_files": sum(stored_size(f"files/{i}") for i in results.values()),
        "checkpoints": 2 * CHECKPOINT_BYTES,
        "adapters": sum(stored_size(key) for key in stored_keys(f"artifacts/{job_id}")),
        "merged_models": 0,
    }

    deleted = client.delete(f"/v1/fine_tuning/jobs/{job_id}")
    assert deleted.status_code == 200, deleted.text
    assert not outputs & stored_keys()
    assert not (get_settings().storage_root / "checkpoints" / job_id).exists()
    for path in ("", "/events", "/metrics", "/checkpoints", "/artifacts/adapter"):
        assert_error(client.get(f"/v1/fine_tuning/jobs/{job_id}{path}"), 404, param="fine_tuning_job_id")
    for result in results.values():
        assert_error(client.get(f"/v1/files/{result}"), 404)
    assert usage(client)["storage"]["by_kind"] == {
        "uploads": len(CHAT),
        "result_files": 0,
        "checkpoints": 0,
        "adapters": 0,
        "merged_models": 0,
    }
    assert f"files/{file_id}" in stored_keys()


def test_checkpoint_deletion_keeps_what_an_active_job_may_still_read(org: tuple[str, TestClient]) -> None:
    org_id, client = org
    file_id = upload_ok(client, CHAT)
    job_id = unsent_queued_job(org_id, file_id)
    older, newest = stored_checkpoint(job_id, step=1), stored_checkpoint(job_id, step=2)
    url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints"
    error = assert_error(client.delete(f"{url}/{newest}"), 409, code="checkpoint_in_use")
    assert "newest" in error["message"] and "resumes from it" in error["message"]
    deleted = client.delete(f"{url}/{older}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": older, "object": "fine_tuning.job.checkpoint", "deleted": True}
    assert stored_keys(f"checkpoints/{job_id}") == {f"checkpoints/{job_id}/step-2/adapter.tar.gz"}
    assert [c["id"] for c in client.get(url).json()["data"]] == [newest]
    assert_error(client.delete(f"{url}/{older}"), 404, param="checkpoint_id")
    assert_error(client.delete(f"{url}/ftckpt-missing"), 404, param="checkpoint_id")

    # A job that starts from the checkpoint holds it (and its job) while it is active.
    client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    follower = unsent_queued_job(org_id, file_id, from_checkpoint=newest)
    error = assert_error(client.delete(f"{url}/{newest}"), 409, code="checkpoint_in_use")
    assert follower in error["message"] and "from_checkpoint" in error["message"]
    error = assert_error(client.delete(f"/v1/fine_tuning/jobs/{job_id}"), 409, code="checkpoint_in_use")
    assert follower in error["message"]
    other_job = unsent_queued_job(org_id, file_id)
    assert_error(client.delete(f"/v1/fine_tuning/jobs/{other_job}/checkpoints/{newest}"), 404, param="checkpoint_id")
    client.post(f"/v1/fine_tuning/jobs/{follower}/cancel")
    assert client.delete(f"{url}/{newest}").status_code == 200
    assert not stored_keys(f"checkpoints/{job_id}")
    assert client.delete(f"/v1/fine_tuning/jobs/{job_id}").status_code == 200


def test_rejected_uploads_expire_and_are_removed_with_their_bytes(org: tuple[str, TestClient], quota: None) -> None:
    _, client = org
    kept = upload_ok(client, CHAT)
    error = assert_error(upload(client, b"not json\n"), 400, code="invalid_file")
    rejected = error["file"]
    retention = int(get_settings().rejected_file_retention_seconds)
    assert retention == 7 * 86400 and rejected["expires_at"] == rejected["created_at"] + retention
    assert client.get(f"/v1/files/{kept}").json()["expires_at"] is None
    assert f"files/{rejected['id']}" in stored_keys("files")

    get_settings().rejected_file_retention_seconds = 0
    upload(client, b"still not json\n")  # a second one: the sweep below must take more than one batch
    assert files.remove_expired_rejected(get_storage(), batch=1) >= 2  # what the maintenance loop runs
    assert_error(client.get(f"/v1/files/{rejected['id']}"), 404, param="file_id")
    assert f"files/{rejected['id']}" not in stored_keys("files")
    assert client.get(f"/v1/files/{kept}").status_code == 200 and f"files/{kept}" in stored_keys("files")


WANDB = {"type": "wandb", "wandb": {"project": "tuning"}}


@pytest.mark.parametrize(
    ("integrations", "param", "words"),
    [
        ([{"type": "comet", "wandb": {"project": "p"}}], "integrations[0].type", "must be 'wandb'"),
        ([{"type": "wandb"}], "integrations[0].wandb", "required"),
        ([{"type": "wandb", "wandb": {}}], "integrations[0].wandb.project", "required"),
        ([{"type": "wandb", "wandb": {"project": ""}}], "integrations[0].wandb.project", "at least 1"),
        ([{"type": "wandb", "wandb": {"project": "p", "run_id": "x"}}], "integrations[0].wandb.run_id", "unknown"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": ["t" * 65]}}], "integrations[0].wandb.tags[0]", "64"),
        ([{"type": "wandb", "wandb": {"project": "p", "tags": ["t"] * 21}}], "integrations[0].wandb.tags", "20"),
        ([{"type": "wandb", "wandb": {"project": "p", "entity": 7}}], "integrations[0].wandb.entity", "string"),
        ([WANDB, WANDB], "integrations", "once"),
        (WANDB, "integrations", "a list"),
        ([{"type": "wandb", "wandb": {"project": "p"}, "extra": 1}], "integrations[0].extra", "unknown"),
    ],
)
def test_bad_integrations_are_refused_naming_the_field(client_module, chat_file, integrations, param, words) -> None:  # type: ignore[no-untyped-def]
    body = {"model": "tiny-llama", "training_file": chat_file, "integrations": integrations}
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json=body), 400, param=param)
    assert words in error["message"], error


def test_integrations_are_echoed_as_openai_does(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    wandb = {"project": "tuning", "name": "first", "entity": "team", "tags": ["a", "b"]}
    body = {"model": "tiny-llama", "training_file": chat_file, "integrations": [{"type": "wandb", "wandb": wandb}]}
    created = client_module.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["integrations"] == [{"type": "wandb", "wandb": wandb}]
    job_id = created.json()["id"]
    minimal = {"model": "tiny-llama", "training_file": chat_file, "integrations": [WANDB]}
    echoed = client_module.post("/v1/fine_tuning/jobs", json=minimal).json()
    assert echoed["integrations"] == [
        {"type": "wandb", "wandb": {"project": "tuning", "name": None, "entity": None, "tags": []}}
    ]
    no_integrations = client_module.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file}
    )
    assert no_integrations.json()["integrations"] == []
    for job in (job_id, echoed["id"], no_integrations.json()["id"]):
        client_module.post(f"/v1/fine_tuning/jobs/{job}/cancel")
