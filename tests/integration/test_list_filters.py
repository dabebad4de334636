"""The documented filters of every list apply, and a query parameter an endpoint does
not take is refused, naming it; the queue position and estimated finish of a job.
Jobs created here never reach a training worker (they are cancelled, or queued without
a broker message)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import jobs
from core.db import session_scope
from core.events import record_metric
from core.states import JobStatus
from tests.conftest import TEST_ORG
from tests.helpers import assert_error, unsent_queued_job, wait_for


def create(client: TestClient, training_file: str, **body: Any) -> str:
    response = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": training_file, **body})
    assert response.status_code == 200, response.text
    job_id: str = response.json()["id"]
    return job_id


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_jobs_filter_by_status(client_module: TestClient, chat_file: str) -> None:
    cancelled = create(client_module, chat_file)
    client_module.post(f"/v1/fine_tuning/jobs/{cancelled}/cancel")
    failed = create(client_module, chat_file)
    with session_scope() as session:
        jobs.transition(session, failed, JobStatus.FAILED, error={"code": "x", "message": "y", "param": None})

    listed = client_module.get("/v1/fine_tuning/jobs", params={"status": "cancelled", "limit": 100})
    assert cancelled in ids(listed) and failed not in ids(listed)
    assert {j["status"] for j in listed.json()["data"]} == {"cancelled"}
    assert failed in ids(client_module.get("/v1/fine_tuning/jobs", params={"status": "failed", "limit": 100}))
    running = client_module.get("/v1/fine_tuning/jobs", params={"status": "running", "limit": 100}).json()["data"]
    assert all(j["status"] == "running" for j in running)

    error = assert_error(client_module.get("/v1/fine_tuning/jobs", params={"status": "finished"}), 400, "status")
    assert "'succeeded'" in error["message"] and '(got "finished")' in error["message"]


def test_jobs_filter_by_metadata_as_the_openai_client_sends_it(client_module: TestClient, chat_file: str) -> None:
    # jobs.list(metadata={"team": "search"}) sends ?metadata[team]=search.
    search = create(client_module, chat_file, metadata={"team": "search", "stage": "dev"})
    ranking = create(client_module, chat_file, metadata={"team": "ranking", "stage": "dev"})
    plain = create(client_module, chat_file)
    for job_id in (search, ranking, plain):
        client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")

    def listed(params: dict[str, str]) -> list[str]:
        return ids(client_module.get("/v1/fine_tuning/jobs", params={"limit": "100", **params}))

    assert search in listed({"metadata[team]": "search"}) and ranking not in listed({"metadata[team]": "search"})
    both = listed({"metadata[stage]": "dev"})
    assert search in both and ranking in both and plain not in both
    assert listed({"metadata[team]": "search", "metadata[stage]": "dev"})[0] == search
    assert listed({"metadata[team]": "search", "metadata[stage]": "prod"}) == []
    # Filters and the cursor together: the page after the newest matching job.
    page = client_module.get("/v1/fine_tuning/jobs", params={"metadata[stage]": "dev", "limit": 1}).json()
    assert page["data"][0]["id"] == ranking and page["has_more"]
    after = client_module.get(
        "/v1/fine_tuning/jobs", params={"metadata[stage]": "dev", "limit": 1, "after": page["last_id"]}
    )
    assert ids(after) == [search]

    for params, param in [
        ({"metadata": "team"}, "metadata"),
        ({"metadata[]": "x"}, "metadata[]"),
        ({"metadata[" + "k" * 65 + "]": "x"}, "metadata[" + "k" * 65 + "]"),
        ({"metadata[team]": "v" * 513}, "metadata[team]"),
    ]:
        assert_error(client_module.get("/v1/fine_tuning/jobs", params=params), 400, param)


def test_metrics_filter_by_split(client_module: TestClient, chat_file: str) -> None:
    job_id = create(client_module, chat_file)
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    with session_scope() as session:  # points as a worker records them
        record_metric(session, job_id, 1, {"epoch": 0.5, "loss": 2.5})
        record_metric(session, job_id, 2, {"epoch": 1.0, "loss": 2.0})
        record_metric(session, job_id, 2, {"epoch": 1.0, "loss": 2.2}, split="valid")
    url = f"/v1/fine_tuning/jobs/{job_id}/metrics"
    valid = client_module.get(url, params={"split": "valid"}).json()["data"]
    assert [(m["step"], m["split"], m["loss"]) for m in valid] == [(2, "valid", 2.2)]
    train = client_module.get(url, params={"split": "train"}).json()["data"]
    assert [(m["step"], m["split"]) for m in train] == [(1, "train"), (2, "train")]
    assert len(client_module.get(url).json()["data"]) == 3
    assert (
        "'train' or 'valid'" in assert_error(client_module.get(url, params={"split": "eval"}), 400, "split")["message"]
    )
    # A validation is logged as one, not as a training step.
    messages = [e["message"] for e in client_module.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]]
    assert "Validation at step 2: epoch=1, loss=2.2" in messages and "Step 2: epoch=1, loss=2" in messages


def test_files_filter_by_purpose(client_module: TestClient, chat_file: str) -> None:
    from core.files import register_result
    from core.ids import new_id
    from core.storage import StoredObject

    results_id = new_id("file")
    with session_scope() as session:
        register_result(session, TEST_ORG, results_id, "step_metrics.csv", StoredObject("files/none", 1, "0" * 64))
    uploads = ids(client_module.get("/v1/files", params={"purpose": "fine-tune", "limit": 100}))
    results = ids(client_module.get("/v1/files", params={"purpose": "fine-tune-results", "limit": 100}))
    assert chat_file in uploads and results_id not in uploads
    assert results_id in results and chat_file not in results
    error = assert_error(client_module.get("/v1/files", params={"purpose": "fine_tune"}), 400, "purpose")
    assert "'fine-tune' or 'fine-tune-results'" in error["message"]
    assert_error(client_module.get("/v1/files", params={"limit": 101}), 400, "limit")


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/fine_tuning/jobs", {"state": "running"}, "state"),
        ("/v1/fine_tuning/jobs", {"limit": 5, "metadata.team": "a"}, "metadata.team"),
        ("/v1/fine_tuning/jobs/{job}", {"expand": "events"}, "expand"),
        ("/v1/fine_tuning/jobs/{job}/events", {"split": "train"}, "split"),
        ("/v1/fine_tuning/jobs/{job}/metrics", {"limit": 5}, "limit"),
        ("/v1/fine_tuning/jobs/{job}/checkpoints", {"status": "queued"}, "status"),
        ("/v1/files", {"format": "chat"}, "format"),
        ("/v1/files/{file}", {"purpose": "fine-tune"}, "purpose"),
        ("/v1/models", {"owned_by": "local"}, "owned_by"),
    ],
)
def test_an_unknown_query_parameter_is_refused_naming_it(  # type: ignore[no-untyped-def]
    client_module, chat_file, path, params, param
) -> None:
    job_id = create(client_module, chat_file)
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    url = path.format(job=job_id, file=chat_file)
    error = assert_error(client_module.get(url, params=params), 400, param, "unknown_parameter")
    assert error["message"].startswith(f"Unknown query parameter {param!r}")


def test_the_refusal_lists_what_the_endpoint_takes(client_module: TestClient) -> None:
    error = assert_error(client_module.get("/v1/fine_tuning/jobs", params={"statuss": "queued"}), 400, "statuss")
    assert error["message"].endswith("this endpoint takes after, limit, status, metadata[key]")
    error = assert_error(client_module.get("/v1/models/tiny-llama", params={"q": "x"}), 400, "q")
    assert error["message"].endswith("this endpoint takes no query parameters")


def test_a_queued_job_shows_its_place_in_the_queue(client_module: TestClient, chat_file: str) -> None:
    first, second = (unsent_queued_job(TEST_ORG, chat_file) for _ in range(2))
    one = client_module.get(f"/v1/fine_tuning/jobs/{first}").json()
    two = client_module.get(f"/v1/fine_tuning/jobs/{second}").json()
    assert one["queue_position"] >= 1 and two["queue_position"] == one["queue_position"] + 1
    listed = {j["id"]: j for j in client_module.get("/v1/fine_tuning/jobs", params={"status": "queued"}).json()["data"]}
    assert listed[second]["queue_position"] == two["queue_position"]
    # The first leaves the queue: the second moves up.
    client_module.post(f"/v1/fine_tuning/jobs/{first}/cancel")
    assert client_module.get(f"/v1/fine_tuning/jobs/{first}").json()["queue_position"] is None
    assert client_module.get(f"/v1/fine_tuning/jobs/{second}").json()["queue_position"] == one["queue_position"]
    client_module.post(f"/v1/fine_tuning/jobs/{second}/cancel")


def test_a_running_jobs_estimated_finish_comes_from_its_measured_step_time(
    client_module: TestClient, chat_file: str
) -> None:
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    with session_scope() as session:  # a worker's claim, as far as the job object shows it
        jobs.transition(session, job_id, JobStatus.RUNNING, message="running (test)")
        jobs.record_progress(session, job_id, 0, 40, 9, None)
    job = client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["estimated_finish"] is None and job["queue_position"] is None  # no step measured yet
    assert job["progress"]["total_steps"] == 40 and job["progress"]["epochs"] == 9
    before = time.time()
    with session_scope() as session:
        jobs.record_progress(session, job_id, 10, 40, 9, 1.5)
    job = client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert before + 45 <= job["estimated_finish"] <= time.time() + 46  # 30 steps left at 1.5 s
    assert job["progress"]["step"] == 10 and job["progress"]["seconds_per_step"] == 1.5
    # The worker's epoch count (its batches) replaces the one estimated at creation, and says so.
    with session_scope() as session:
        jobs.record_progress(session, job_id, 10, 40, 7, 1.5)
    job = client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert job["hyperparameters"]["n_epochs"] == job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 7
    events = client_module.get(f"/v1/fine_tuning/jobs/{job_id}/events").json()["data"]
    assert events[0]["message"].startswith("The job runs 7 epochs, not the 9 estimated at creation")
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert client_module.get(f"/v1/fine_tuning/jobs/{job_id}").json()["estimated_finish"] is None


def test_max_steps_with_auto_epochs_reports_the_epochs_it_covers(client_module: TestClient, chat_file: str) -> None:
    # 36 examples in batches of 8: 5 steps per epoch; 12 steps start 3 epochs.
    job_id = create(
        client_module,
        chat_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
        qlora={"training": {"max_steps": 12}},
    )
    job = wait_for(client_module, job_id, {"queued"}, timeout=120)
    client_module.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
    assert job["hyperparameters"]["n_epochs"] == 3
    both = client_module.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": chat_file,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            "qlora": {"training": {"max_steps": 20}},
        },
    )
    error = assert_error(both, 400, "qlora.training.max_steps")
    assert "either n_epochs or qlora.training.max_steps, not both" in error["message"]
