"""Evaluations through the API without a worker: the evaluation object, its default
file, paging, cancel, what it holds back (deleting the job or its model while it is
to run), every refusal, and its lease on the record (a lost worker's evaluation runs
again). tests/integration/test_evaluation_e2e.py runs one with a real worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from core import evaluations, maintenance
from core.db import session_scope
from core.models import Evaluation
from tests.conftest import OTHER_ORG, TEST_ORG, make_client
from tests.helpers import EXAMPLES, assert_error, jsonl, succeeded_job, unsent_queued_job, upload_ok

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture(scope="module", autouse=True)
def no_evaluation_left_queued(client_module: TestClient) -> Iterator[None]:
    """Evaluations made here are sent to the training queue: cancelled at the end, a
    worker of a later test drops their messages at the cost of one query."""
    yield
    with session_scope() as session:
        queued = session.scalars(select(Evaluation).where(Evaluation.status.in_(evaluations.ACTIVE_EVALUATIONS)))
        for evaluation in queued:
            evaluations.RUNS.move(session, evaluation.id, evaluations.EvaluationStatus.CANCELLED, message="test over")


@pytest.fixture(scope="module")
def validation_file(client_module: TestClient) -> str:
    return upload_ok(client_module, (EXAMPLES / "short_answers.jsonl").read_bytes(), "short_answers.jsonl")


@pytest.fixture(scope="module")
def job_id(chat_file: str, validation_file: str) -> str:
    """A succeeded job (stand-in adapter, no training) with a validation file."""
    return succeeded_job(TEST_ORG, chat_file, validation_file=validation_file).rsplit(":", 1)[1]


def evaluate(client: TestClient, job_id: str, **body: Any) -> Any:
    return client.post(f"{JOBS}/{job_id}/evaluations", json=body or None)


def test_an_evaluation_is_queued_on_the_jobs_validation_file(
    client_module: TestClient, job_id: str, validation_file: str
) -> None:
    created = evaluate(client_module, job_id)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["id"].startswith("fteval-") and body["object"] == "fine_tuning.job.evaluation"
    assert (body["status"], body["fine_tuning_job_id"], body["file"]) == ("queued", job_id, validation_file)
    assert body["model"] == f"ft:tiny-llama:{TEST_ORG}:{job_id}" and body["base_model"] == "tiny-llama"
    assert (body["max_examples"], body["max_tokens"], body["sample_size"]) == (None, 64, 5)
    assert body["results"] is None and body["sample"] == [] and body["result_files"] == []
    assert body["error"] is None and body["finished_at"] is None and body["attempts"] == 0
    assert client_module.get(f"{JOBS}/{job_id}/evaluations/{body['id']}").json() == body
    log = client_module.get(f"{JOBS}/{job_id}/events").json()["data"]
    assert log[0]["message"].startswith(f"Evaluation {body['id']}: ft:tiny-llama:{TEST_ORG}:{job_id} against")
    assert log[0]["data"]["evaluation_id"] == body["id"]


def test_evaluations_are_listed_newest_first_and_paged(client_module: TestClient, job_id: str, chat_file: str) -> None:
    first = evaluate(client_module, job_id, file=chat_file, max_examples=3, max_tokens=8, sample_size=0).json()
    second = evaluate(client_module, job_id).json()
    assert (first["file"], first["max_examples"], first["max_tokens"], first["sample_size"]) == (chat_file, 3, 8, 0)
    page = client_module.get(f"{JOBS}/{job_id}/evaluations", params={"limit": 1}).json()
    assert [e["id"] for e in page["data"]] == [second["id"]] and page["has_more"]
    after = client_module.get(f"{JOBS}/{job_id}/evaluations", params={"limit": 1, "after": second["id"]}).json()
    assert [e["id"] for e in after["data"]] == [first["id"]]
    bad_cursor = client_module.get(f"{JOBS}/{job_id}/evaluations", params={"after": "fteval-missing"})
    assert_error(bad_cursor, 404, param="after")


def test_cancel(client_module: TestClient, job_id: str) -> None:
    evaluation_id = evaluate(client_module, job_id).json()["id"]
    cancelled = client_module.post(f"{JOBS}/{job_id}/evaluations/{evaluation_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = client_module.post(f"{JOBS}/{job_id}/evaluations/{evaluation_id}/cancel")
    assert_error(again, 409, code="evaluation_not_cancellable")
    log = client_module.get(f"{JOBS}/{job_id}/events").json()["data"]
    assert log[0]["message"] == f"Evaluation {evaluation_id}: cancelled by the user"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"max_examples": 0}, "max_examples"),
        ({"sample_size": -1}, "sample_size"),
        ({"file": 7}, "file"),
        ({"temperature": 1}, "temperature"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(
    client_module: TestClient, job_id: str, body: dict[str, Any], param: str
) -> None:
    assert_error(evaluate(client_module, job_id, **body), 400, param=param)


def test_bad_files_are_refused(client_module: TestClient, job_id: str, chat_file: str) -> None:
    assert_error(evaluate(client_module, job_id, file="file-missing"), 404, param="file")
    text = upload_ok(client_module, jsonl({"text": "Raw text to continue."}), "text.jsonl")
    error = assert_error(evaluate(client_module, job_id, file=text), 400, param="file", code="invalid_file")
    assert "'text'" in error["message"]
    without_validation = succeeded_job(TEST_ORG, chat_file).rsplit(":", 1)[1]
    error = assert_error(evaluate(client_module, without_validation), 400, param="file", code="missing_file")
    assert "validation_file" in error["message"]


def test_only_a_succeeded_job_of_the_organization_is_evaluated(
    client_module: TestClient, job_id: str, chat_file: str, api_keys: dict[str, str]
) -> None:
    assert_error(evaluate(client_module, "ftjob-missing"), 404, param="fine_tuning_job_id")
    with make_client(api_keys[OTHER_ORG]) as other:
        assert_error(evaluate(other, job_id), 404, param="fine_tuning_job_id")
        assert_error(other.get(f"{JOBS}/{job_id}/evaluations"), 404, param="fine_tuning_job_id")
    evaluation_id = evaluate(client_module, job_id).json()["id"]
    with make_client(api_keys[OTHER_ORG]) as other:
        assert_error(other.get(f"{JOBS}/{job_id}/evaluations/{evaluation_id}"), 404, param="fine_tuning_job_id")
    assert_error(client_module.get(f"{JOBS}/{job_id}/evaluations/fteval-missing"), 404, param="evaluation_id")
    tasks = upload_ok(client_module, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    multitask = succeeded_job(TEST_ORG, tasks, qlora={"adapter": {"type": "multitask_prompt_tuning"}})
    error = assert_error(evaluate(client_module, multitask.rsplit(":", 1)[1]), 409, code="adapter_not_supported")
    assert "multitask_prompt_tuning" in error["message"]
    queued = unsent_queued_job(TEST_ORG, chat_file)
    error = assert_error(evaluate(client_module, queued), 409, code="job_not_succeeded")
    assert "queued" in error["message"]
    client_module.post(f"{JOBS}/{queued}/cancel")


def test_an_evaluation_holds_its_job_and_model_until_it_ends(client_module: TestClient, chat_file: str) -> None:
    model = succeeded_job(TEST_ORG, chat_file)
    job_id = model.rsplit(":", 1)[1]
    evaluation_id = evaluate(client_module, job_id, file=chat_file).json()["id"]
    assert_error(client_module.delete(f"/v1/models/{model}"), 409, code="evaluation_in_progress")
    assert_error(client_module.delete(f"{JOBS}/{job_id}"), 409, code="evaluation_in_progress")
    client_module.post(f"{JOBS}/{job_id}/evaluations/{evaluation_id}/cancel")
    assert client_module.delete(f"/v1/models/{model}").status_code == 200
    error = assert_error(evaluate(client_module, job_id, file=chat_file), 409, code="model_deleted")
    assert "deleted" in error["message"]
    assert client_module.delete(f"{JOBS}/{job_id}").status_code == 200
    with session_scope() as session:  # its evaluations went with it
        assert session.scalar(select(Evaluation).where(Evaluation.id == evaluation_id)) is None


def test_a_lost_workers_evaluation_runs_again_and_only_the_lease_holder_publishes(
    client_module: TestClient, job_id: str
) -> None:
    evaluation_id = evaluate(client_module, job_id).json()["id"]
    with session_scope() as session:
        assert evaluations.RUNS.claim(session, evaluation_id, "presumed-dead", "host") is not None
        assert evaluations.RUNS.claim(session, evaluation_id, "another", "host") is None  # one run at a time
    with session_scope() as session:
        expired = update(Evaluation).where(Evaluation.id == evaluation_id).values(lease_expires_at=time.time() - 1)
        session.execute(expired)
        assert evaluations.RUNS.reap(session) >= 1
    assert client_module.get(f"{JOBS}/{job_id}/evaluations/{evaluation_id}").json()["status"] == "queued"
    assert maintenance.reconcile_queue() >= 1  # sent again
    with session_scope() as session:
        assert evaluations.RUNS.claim(session, evaluation_id, "replacement", "host") is not None
        assert not evaluations.RUNS.succeed(session, evaluation_id, "presumed-dead", "done", {})
        assert evaluations.RUNS.succeed(session, evaluation_id, "replacement", "done", {}, result_files=[])
    body = client_module.get(f"{JOBS}/{job_id}/evaluations/{evaluation_id}").json()
    assert (body["status"], body["attempts"]) == ("succeeded", 2)
    log = client_module.get(f"{JOBS}/{job_id}/events", params={"limit": 5}).json()["data"]
    lost = f"Evaluation {evaluation_id}: Worker lease presumed-dead expired (attempt 1); queued to run again"
    assert lost in [e["message"] for e in log]


def test_a_jobs_own_evaluation_is_checked_when_the_job_is_created(client_module: TestClient, chat_file: str) -> None:
    def create(training_file: str, **qlora: Any) -> Any:
        return client_module.post(JOBS, json={"model": "tiny-llama", "training_file": training_file, "qlora": qlora})

    error = assert_error(create(chat_file, evaluation={}), 400, param="qlora.evaluation.file", code="missing_file")
    assert "validation_file" in error["message"]
    text = upload_ok(client_module, jsonl({"text": "Raw text to continue."}), "text.jsonl")
    assert_error(create(chat_file, evaluation={"file": text}), 400, param="qlora.evaluation.file", code="invalid_file")
    assert_error(create(chat_file, evaluation={"max_tokens": 0}), 400, param="qlora.evaluation.max_tokens")
    tasks = upload_ok(client_module, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    multitask = create(tasks, adapter={"type": "multitask_prompt_tuning"}, evaluation={"file": chat_file})
    assert_error(multitask, 400, param="qlora.evaluation", code="adapter_not_supported")
    created = create(chat_file, evaluation={"file": chat_file, "max_tokens": 8})
    assert created.status_code == 200, created.text
    assert created.json()["qlora"]["evaluation"] == {
        "file": chat_file,
        "max_examples": None,
        "max_tokens": 8,
        "sample_size": 5,
    }
    client_module.post(f"{JOBS}/{created.json()['id']}/cancel")
