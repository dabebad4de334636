"""A failure says which phase failed. Here publishing, caused for real: the job's
artifact folder in storage cannot be created (a file stands where the folder must go;
nothing else the job writes goes there), so training finishes and writing its adapter
fails."""

from __future__ import annotations

import pytest

from core.settings import get_settings
from tests.conftest import Workers
from tests.faults.test_worker_faults import spec
from tests.helpers import all_events, wait_for

pytestmark = pytest.mark.slow


def test_a_storage_failure_after_training_fails_as_publishing(client_module, chat_file: str, worker: Workers) -> None:  # type: ignore[no-untyped-def]
    client = client_module
    job = client.post("/v1/fine_tuning/jobs", json=spec(chat_file, 6)).json()
    blocked = get_settings().storage_root / "artifacts" / job["id"]
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_bytes(b"not a folder")

    failed = wait_for(client, job["id"], {"failed"})
    error = failed["error"]
    assert error["code"] == "publishing_failed", error
    assert error["message"].startswith("Training finished (6 steps) but publishing its adapter to storage failed")
    assert failed["fine_tuned_model"] is None and failed["attempts"] == 1
    event = all_events(client, job["id"])[-1]
    assert event["level"] == "error" and event["data"]["phase"] == "publishing"
    assert event["data"]["exception"].startswith(("NotADirectoryError", "FileExistsError"))
