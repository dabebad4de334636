"""The refusals of the checkpoint, pause and resume endpoints and of `from_checkpoint`,
and an upload whose body ends before its closing boundary (no worker needed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_ORG
from tests.helpers import assert_error, file_rows, stored_checkpoint, stored_objects, unsent_queued_job


@pytest.fixture
def job_id(client_module, chat_file: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    yield job_id
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


def test_pause_and_resume_answer_409_in_the_wrong_state(client_module, job_id: str) -> None:  # type: ignore[no-untyped-def]
    url = f"/v1/fine_tuning/jobs/{job_id}"
    assert_error(client_module.post(f"{url}/resume"), 409, code="job_not_paused")
    paused = client_module.post(f"{url}/pause")  # queued: paused at once
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert client_module.post(f"{url}/cancel").json()["status"] == "cancelled"
    assert_error(client_module.post(f"{url}/pause"), 409, code="job_not_pausable")
    assert_error(client_module.post(f"{url}/resume"), 409, code="job_not_paused")


def test_an_unknown_checkpoint_is_404(client_module, job_id: str) -> None:  # type: ignore[no-untyped-def]
    url = f"/v1/fine_tuning/jobs/{job_id}/checkpoints"
    assert client_module.get(url).json()["data"] == []
    assert_error(client_module.get(f"{url}/ftckpt-missing/adapter"), 404, param="checkpoint_id", code="not_found")
    spec = {"model": "tiny-llama", "training_file": "file-x", "from_checkpoint": "ftckpt-missing"}
    assert_error(client_module.post("/v1/fine_tuning/jobs", json=spec), 404, param="from_checkpoint")


def test_a_checkpoint_only_starts_a_job_on_its_own_base_model(
    client_module, chat_file: str, job_id: str, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    shutil.copytree(tiny_model, tiny_model.parent / "other-llama", dirs_exist_ok=True)
    spec = {"model": "other-llama", "training_file": chat_file, "from_checkpoint": stored_checkpoint(job_id)}
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json=spec), 400, param="from_checkpoint")
    assert error["code"] == "checkpoint_model_mismatch" and "tiny-llama" in error["message"]


def test_an_upload_without_its_closing_boundary_is_refused_and_not_kept(client_module) -> None:  # type: ignore[no-untyped-def]
    before = (file_rows(), stored_objects())
    body = (
        b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="cut.jsonl"\r\n\r\n'
        b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hel'
    )
    response = client_module.post(
        "/v1/files", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert_error(response, 400, param="file", code="incomplete_upload")
    assert (file_rows(), stored_objects()) == before
