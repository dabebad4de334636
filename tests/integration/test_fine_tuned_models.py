"""Fine-tuned models as objects (listed, read, deleted while unused), the final adapter
as the last checkpoint, a fine-tuned model or a checkpoint's name as the start of a new
job, and the refusals of each. No training worker: jobs succeed through the worker's own
publishing with a stand-in adapter (tests.helpers.succeeded_job); test_continued_training
trains for real."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core import checkpoints
from core.db import session_scope
from core.job_cleanup import delete_model
from core.job_creation import create_job
from core.jobs import cancel_job
from core.models import Artifact, Checkpoint, Job
from core.specs import JobSpec
from core.storage import StoredObject, get_storage
from tests.conftest import OTHER_ORG, TEST_ORG, make_client
from tests.helpers import (
    EXAMPLES,
    all_events,
    assert_error,
    fresh_org,
    stored_checkpoint,
    succeeded_job,
    unsent_queued_job,
    upload_ok,
)

JOBS = "/v1/fine_tuning/jobs"


def create(client: TestClient, training_file: str, **spec: Any) -> Any:
    return client.post(JOBS, json={"model": "tiny-llama", "training_file": training_file} | spec)


def created(client: TestClient, training_file: str, **spec: Any) -> dict[str, Any]:
    response = create(client, training_file, **spec)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def listed_checkpoints(client: TestClient, job_id: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get(f"{JOBS}/{job_id}/checkpoints").json()["data"]
    return data


def job_of(name: str) -> str:
    """The job id at the end of a fine-tuned model's name."""
    return name.rsplit(":", 1)[1]


def storage_keys(job_id: str) -> set[str]:
    """The objects the job's adapter artifact and checkpoints are stored in."""
    with session_scope() as session:
        rows = session.query(Checkpoint.adapter_key, Checkpoint.state_key).filter(Checkpoint.job_id == job_id).all()
        artifact = session.query(Artifact.storage_key).filter(Artifact.job_id == job_id).all()
    return {key for row in [*rows, *artifact] for key in row if key is not None}


def test_models_lists_base_and_fine_tuned_models_and_reads_each(
    client_module: TestClient, chat_file: str, api_keys: dict[str, str]
) -> None:
    client = client_module
    name = succeeded_job(TEST_ORG, chat_file, suffix="listed")
    job_id = job_of(name)
    assert name == f"ft:tiny-llama:{TEST_ORG}:listed:{job_id}"
    job = client.get(f"{JOBS}/{job_id}").json()
    assert job["fine_tuned_model"] == name
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models["tiny-llama"]["owned_by"] == "local" and models["tiny-llama"]["object"] == "model"
    assert models[name] == {"id": name, "object": "model", "created": job["finished_at"], "owned_by": TEST_ORG}
    assert client.get(f"/v1/models/{name}").json() == models[name]
    assert client.get("/v1/models/tiny-llama").json() == models["tiny-llama"]

    # Base models first, then fine-tuned ones, newest first; paging walks them all.
    newer = succeeded_job(TEST_ORG, chat_file)
    newer_id = job_of(newer)
    everything = [m["id"] for m in client.get("/v1/models").json()["data"]]
    seen, after = [], None
    while True:
        page = client.get("/v1/models", params={"limit": 1} | ({"after": after} if after else {})).json()
        assert len(page["data"]) == 1
        seen.append(page["data"][0]["id"])
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == everything
    assert everything.index("tiny-llama") < everything.index(newer) < everything.index(name)
    assert_error(client.get("/v1/models", params={"after": f"ft:tiny-llama:x:{job_id}"}), 404, param="after")
    assert_error(client.get("/v1/models/no-such-model"), 404, param="model", code="model_not_found")
    checkpoint = listed_checkpoints(client, newer_id)[0]["fine_tuned_model_checkpoint"]
    error = assert_error(client.get(f"/v1/models/{checkpoint}"), 404, param="model", code="model_not_found")
    assert f"{newer_id}/checkpoints" in error["message"]

    with make_client(api_keys[OTHER_ORG]) as intruder:
        assert name not in [m["id"] for m in intruder.get("/v1/models").json()["data"]]
        assert_error(intruder.get(f"/v1/models/{name}"), 404, param="model", code="model_not_found")
        assert_error(intruder.get("/v1/models", params={"after": name}), 404, param="after")


def test_the_final_adapter_is_the_last_checkpoint_never_resumed_nor_pruned(
    client_module: TestClient, chat_file: str
) -> None:
    client = client_module
    name = succeeded_job(TEST_ORG, chat_file, steps=30)
    job_id = job_of(name)
    [final] = listed_checkpoints(client, job_id)
    assert final["step_number"] == 30 and final["fine_tuned_model_checkpoint"] == f"{name}:ckpt-step-30"
    assert final["metrics"] == {"step": 30, "train_loss": 1.5, "train_mean_token_accuracy": 0.5}
    artifact = client.get(f"{JOBS}/{job_id}/artifacts/adapter")
    download = client.get(f"{JOBS}/{job_id}/checkpoints/{final['id']}/adapter")
    assert download.content == artifact.content
    assert final["adapter_sha256"] == artifact.headers["x-artifact-sha256"] == download.headers["x-artifact-sha256"]

    stored_checkpoint(job_id, step=10)
    stored_checkpoint(job_id, step=20)
    with session_scope() as session:
        resumable = checkpoints.latest(session, job_id)
        assert resumable is not None and resumable.step == 20  # the final one has no state to resume from
        stale = checkpoints.prune(session, job_id, keep=1)
    assert sorted(c["step_number"] for c in listed_checkpoints(client, job_id)) == [20, 30]
    assert stale == [f"checkpoints/{job_id}/step-10/adapter.tar.gz"]


def test_a_checkpoint_at_the_last_step_is_replaced_by_the_final_one(client_module: TestClient, chat_file: str) -> None:
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    saved = stored_checkpoint(job_id, step=5)  # a pause asked for at the last step saves one there
    final = StoredObject(f"artifacts/{job_id}/attempt-1/adapter.tar.gz", 7, "0" * 64)
    with session_scope() as session:
        checkpoint, stale = checkpoints.record_final(session, job_id, 5, {"step": 5}, final)
    assert stale == [
        f"checkpoints/{job_id}/step-5/adapter.tar.gz"
    ]  # its objects, once (adapter and state share one here)
    [listed] = listed_checkpoints(client_module, job_id)
    assert listed["id"] == checkpoint.id != saved and listed["adapter_bytes"] == 7
    client_module.post(f"{JOBS}/{job_id}/cancel")


def test_a_fine_tuned_model_or_a_checkpoint_name_starts_a_job(client_module: TestClient, chat_file: str) -> None:
    client = client_module
    source = succeeded_job(TEST_ORG, chat_file, suffix="first", qlora={"adapter": {"r": 8}})
    checkpoint = listed_checkpoints(client, job_of(source))[0]["fine_tuned_model_checkpoint"]
    assert len(checkpoint) > 64  # beyond what from_checkpoint took before

    continued = created(client, chat_file, model=source, qlora={"training": {"learning_rate": 0.001}})
    assert continued["model"] == source and continued["from_checkpoint"] is None
    assert continued["qlora"]["adapter"]["r"] == 8 and continued["qlora"]["training"]["learning_rate"] == 0.001
    assert any(
        f"Continues training {source} on its base model tiny-llama" in e["message"]
        for e in all_events(client, continued["id"])
    )
    by_name = created(client, chat_file, from_checkpoint=checkpoint)
    assert by_name["from_checkpoint"] == checkpoint and by_name["qlora"]["adapter"]["r"] == 8
    both = created(client, chat_file, model=source, from_checkpoint=checkpoint)
    for job in (continued, by_name, both):
        client.post(f"{JOBS}/{job['id']}/cancel")

    # A job that continued a fine-tuned model is named after the real base, and can be continued in turn.
    second = succeeded_job(TEST_ORG, chat_file, model=source)
    second_id = job_of(second)
    assert second == f"ft:tiny-llama:{TEST_ORG}:{second_id}"
    assert client.get(f"{JOBS}/{second_id}").json()["model"] == source
    third = succeeded_job(TEST_ORG, chat_file, model=second)
    third_id = job_of(third)
    assert third == f"ft:tiny-llama:{TEST_ORG}:{third_id}"
    with session_scope() as session:
        third_job = session.query(Job).filter(Job.id == third_id).one()
        assert (third_job.base_model, third_job.source_job_id) == ("tiny-llama", second_id)
    assert client.get(f"{JOBS}/{third_id}").json()["qlora"]["adapter"]["r"] == 8


@pytest.mark.parametrize(
    ("qlora", "param", "values"),
    [
        ({"adapter": {"r": 4}}, "qlora.adapter.r", ("4", "16")),
        ({"adapter": {"r": 16, "alpha": 8}}, "qlora.adapter.alpha", ("8", "32")),
        ({"adapter": {"use_dora": True}}, "qlora.adapter.use_dora", ("True", "False")),
        ({"adapter": {"type": "ia3"}}, "qlora.adapter.type", ("'ia3'", "'lora'")),
        ({"quantization": {"quant_type": "fp4"}}, "qlora.quantization.quant_type", ("'fp4'", "'nf4'")),
        ({"quantization": None}, "qlora.quantization", ("None", "'nf4'")),
    ],
)
@pytest.mark.parametrize("start", ["model", "from_checkpoint"])
def test_adapter_settings_that_contradict_the_trained_adapter_are_refused(  # type: ignore[no-untyped-def]
    client_module, chat_file, trained_source, qlora, param, values, start
) -> None:
    name = trained_source
    body = {"model": name} if start == "model" else {"from_checkpoint": f"{name}:ckpt-step-3"}
    error = assert_error(create(client_module, chat_file, qlora=qlora, **body), 400, param, "adapter_settings_mismatch")
    assert all(value in error["message"] for value in values), error["message"]


@pytest.fixture(scope="module")
def trained_source(chat_file: str) -> str:
    """A succeeded job with the default adapter (LoRA r 16, alpha 32, NF4), 3 steps."""
    return succeeded_job(TEST_ORG, chat_file)


def test_adapter_settings_equal_to_the_trained_adapters_are_accepted(  # type: ignore[no-untyped-def]
    client_module, chat_file, trained_source
) -> None:
    name = trained_source
    same = {"adapter": {"type": "lora", "r": 16, "alpha": 32}, "quantization": {"bits": 4, "quant_type": "nf4"}}
    job = created(client_module, chat_file, model=name, qlora=same | {"training": {"max_steps": 2}})
    assert job["qlora"]["training"]["max_steps"] == 2
    client_module.post(f"{JOBS}/{job['id']}/cancel")


def test_what_cannot_start_a_job_is_refused_naming_the_field(  # type: ignore[no-untyped-def]
    client_module, chat_file, trained_source, api_keys, tiny_model: Path
) -> None:
    client = client_module
    source = trained_source
    running = unsent_queued_job(TEST_ORG, chat_file)
    not_ready = f"ft:tiny-llama:{TEST_ORG}:{running}"
    assert_error(create(client, chat_file, model=not_ready), 409, "model", "model_not_ready")
    assert_error(client.get(f"/v1/models/{not_ready}"), 409, "model", "model_not_ready")
    client.post(f"{JOBS}/{running}/cancel")
    error = assert_error(create(client, chat_file, from_checkpoint=f"{source}:ckpt-step-999"), 404, "from_checkpoint")
    assert f"{source}:ckpt-step-999" in error["message"]
    assert_error(
        create(client, chat_file, model=f"ft:tiny-llama:{TEST_ORG}:ftjob-nope"), 404, "model", "model_not_found"
    )
    assert_error(create(client, chat_file, from_checkpoint="not-a-checkpoint"), 404, "from_checkpoint")
    assert_error(create(client, chat_file, model="ft:tiny\x00"), 400, "model")
    assert_error(create(client, chat_file, from_checkpoint="ft:" + "x" * 510), 400, "from_checkpoint")

    # A checkpoint fits only its own base model, and only the fine-tuned model it belongs to.
    shutil.copytree(tiny_model, tiny_model.parent / "other-llama", dirs_exist_ok=True)
    error = assert_error(
        create(client, chat_file, model="other-llama", from_checkpoint=f"{source}:ckpt-step-3"),
        400,
        "from_checkpoint",
        "checkpoint_model_mismatch",
    )
    assert "'tiny-llama'" in error["message"] and "'other-llama'" in error["message"]
    other = succeeded_job(TEST_ORG, chat_file)
    error = assert_error(
        create(client, chat_file, model=other, from_checkpoint=f"{source}:ckpt-step-3"),
        400,
        "from_checkpoint",
        "checkpoint_model_mismatch",
    )
    assert job_of(source) in error["message"]

    # Another organization's model and checkpoints are not found.
    with make_client(api_keys[OTHER_ORG]) as intruder:
        own_file = intruder.post(
            "/v1/files",
            files={"file": ("c.jsonl", client.get(f"/v1/files/{chat_file}/content").content)},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        assert_error(create(intruder, own_file, model=source), 404, "model", "model_not_found")
        assert_error(create(intruder, own_file, from_checkpoint=f"{source}:ckpt-step-3"), 404, "from_checkpoint")


def test_a_model_whose_base_is_gone_cannot_be_continued(
    client_module: TestClient, chat_file: str, tiny_model: Path
) -> None:
    base = shutil.copytree(tiny_model, tiny_model.parent / "short-lived-llama")
    name = succeeded_job(TEST_ORG, chat_file, model=base.name)
    shutil.rmtree(base)
    error = assert_error(create(client_module, chat_file, model=name), 409, "model", "base_model_not_found")
    assert "short-lived-llama" in error["message"]


def test_deleting_a_fine_tuned_model(client_module: TestClient, chat_file: str, api_keys: dict[str, str]) -> None:
    client = client_module
    name = succeeded_job(TEST_ORG, chat_file)
    job_id = job_of(name)
    early = stored_checkpoint(job_id, step=1)
    keys = storage_keys(job_id)
    assert len(keys) == 2 and all(get_storage().path(key).exists() for key in keys)

    # Refused while an active job continues it or one of its checkpoints.
    for start in ({"model": name}, {"from_checkpoint": early}, {"from_checkpoint": f"{name}:ckpt-step-3"}):
        user = unsent_queued_job(TEST_ORG, chat_file, **start)
        error = assert_error(client.delete(f"/v1/models/{name}"), 409, "model", "model_in_use")
        assert f"job {user} (queued)" in error["message"]
        client.post(f"{JOBS}/{user}/cancel")
    with make_client(api_keys[OTHER_ORG]) as intruder:
        assert_error(intruder.delete(f"/v1/models/{name}"), 404, "model", "model_not_found")

    deleted = client.delete(f"/v1/models/{name}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": name, "object": "model", "deleted": True}
    assert not any(get_storage().path(key).exists() for key in keys)
    assert storage_keys(job_id) == set() and listed_checkpoints(client, job_id) == []
    assert_error(client.get(f"/v1/models/{name}"), 404, "model", "model_not_found")
    assert name not in [m["id"] for m in client.get("/v1/models").json()["data"]]
    job = client.get(f"{JOBS}/{job_id}").json()
    assert (job["status"], job["fine_tuned_model"]) == ("succeeded", name)  # the job stays, as OpenAI keeps it
    error = assert_error(client.get(f"{JOBS}/{job_id}/artifacts/adapter"), 404, code="artifact_not_ready")
    assert "deleted" in error["message"]
    assert_error(create(client, chat_file, model=name), 404, "model", "model_not_found")
    assert_error(client.delete(f"/v1/models/{name}"), 404, "model", "model_not_found")


def test_what_cannot_be_deleted(client_module: TestClient, chat_file: str) -> None:
    client = client_module
    error = assert_error(client.delete("/v1/models/tiny-llama"), 400, "model", "base_model_not_deletable")
    assert "base model" in error["message"]
    assert_error(client.delete("/v1/models/no-such-model"), 404, "model", "model_not_found")
    name = succeeded_job(TEST_ORG, chat_file)
    assert_error(client.delete(f"/v1/models/{name}:ckpt-step-3"), 404, "model", "model_not_found")
    running = unsent_queued_job(TEST_ORG, chat_file)
    assert_error(client.delete(f"/v1/models/ft:tiny-llama:{TEST_ORG}:{running}"), 409, "model", "model_not_ready")
    client.post(f"{JOBS}/{running}/cancel")
    assert client.get(f"/v1/models/{name}").status_code == 200


def test_a_delete_waits_for_a_job_being_created_from_the_model_and_then_refuses(chat_file: str) -> None:
    name = succeeded_job(TEST_ORG, chat_file)
    outcome: list[BaseException | None] = []

    def delete() -> None:
        try:
            delete_model(get_storage(), TEST_ORG, name, "model")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with session_scope() as session:
        job = create_job(session, TEST_ORG, JobSpec(model=name, training_file=chat_file))
        deleting = threading.Thread(target=delete)
        deleting.start()
        time.sleep(1.0)
        assert deleting.is_alive(), "the delete did not wait for the job being created"
    deleting.join(timeout=30)
    [refusal] = outcome
    assert refusal is not None and getattr(refusal, "code", None) == "model_in_use" and job.id in str(refusal)
    with session_scope() as session:
        cancel_job(session, TEST_ORG, job.id)


def test_a_model_id_takes_the_whole_path_and_leaves_the_merge_its_route(
    client_module: TestClient, chat_file: str
) -> None:
    """Fine-tuned names hold colons and hub ids a slash: the id is a path parameter. The
    merge's POST .../merge, a route under a model, still gets its requests."""
    client = client_module
    assert "/v1/models/{model}" in create_app().openapi()["paths"]
    name = succeeded_job(TEST_ORG, chat_file)
    merge = client.post(f"/v1/models/{name}/merge")
    assert merge.status_code == 200 and merge.json()["model"] == name, merge.text
    # ... and a model being merged is not deleted.
    error = assert_error(client.delete(f"/v1/models/{name}"), 409, code="merge_in_progress")
    assert merge.json()["id"] in error["message"]
    client.post(f"/v1/merges/{merge.json()['id']}/cancel")
    assert client.delete(f"/v1/models/{name}").status_code == 200
    error = assert_error(client.get("/v1/models/owner/name"), 404, "model", "model_not_found")
    assert "'owner/name'" in error["message"]
    error = assert_error(client.get(f"/v1/models/{name}/merge"), 404, "model", "model_not_found")
    assert f"'{name}/merge'" in error["message"]


def test_a_models_job_and_checkpoints_are_kept_while_it_is_continued(client_module: TestClient, chat_file: str) -> None:
    client = client_module
    name = succeeded_job(TEST_ORG, chat_file)
    job_id = job_of(name)
    early = stored_checkpoint(job_id, step=1)
    [final] = [c["id"] for c in listed_checkpoints(client, job_id) if c["step_number"] == 3]
    # The final checkpoint is the model's adapter: it goes with the model.
    url = f"{JOBS}/{job_id}/checkpoints"
    error = assert_error(client.delete(f"{url}/{final}"), 409, code="checkpoint_is_fine_tuned_model")
    assert f"DELETE /v1/models/{name}" in error["message"]

    # A job that continues the model holds the model and its job, not the job's other checkpoints.
    user = unsent_queued_job(TEST_ORG, chat_file, model=name)
    error = assert_error(client.delete(f"{JOBS}/{job_id}"), 409, code="checkpoint_in_use")
    assert f"job {user} (queued) continues model {name}" in error["message"]
    assert client.delete(f"{url}/{early}").status_code == 200
    client.post(f"{JOBS}/{user}/cancel")
    assert client.delete(f"{JOBS}/{job_id}").status_code == 200
    assert_error(client.get(f"/v1/models/{name}"), 404, "model", "model_not_found")


def test_a_fine_tuned_models_adapter_counts_once_in_the_usage(tiny_model: Path) -> None:
    org_id, key = fresh_org("models-usage")
    with make_client(key) as client:
        file_id = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes())
        [final] = listed_checkpoints(client, job_of(succeeded_job(org_id, file_id)))
        by_kind = client.get("/v1/organization/usage").json()["storage"]["by_kind"]
        assert (by_kind["adapters"], by_kind["checkpoints"]) == (final["adapter_bytes"], 0)
