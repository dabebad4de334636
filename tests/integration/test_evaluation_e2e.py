"""An evaluation with a real Celery worker: a tiny QLoRA job trained on a small QA set
(examples/short_answers.jsonl, questions in English and Persian with one short answer:
what a random-weight tiny model can learn in a few CPU steps), then evaluated on it
against its base model, by itself (`qlora.evaluation`) and when asked: the fine-tuned
model answers exactly, the base does not; the figures, the sample, the CSV result file
and the job's log agree."""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import evaluations
from tests.conftest import TEST_ORG
from tests.helpers import EXAMPLES, all_events, succeeded_job, unsent_evaluation, upload_ok, wait_for
from worker.evaluation_runner import CSV_COLUMNS

pytestmark = pytest.mark.slow

JOBS = "/v1/fine_tuning/jobs"
TRAINING = {"qlora": {"training": {"learning_rate": 0.01, "max_steps": 20}}, "hyperparameters": {"batch_size": 4}}


def own_evaluation(client: TestClient, job_id: str) -> dict[str, Any]:
    """The evaluation a job starts once it succeeded (just after its status says so)."""
    deadline = time.monotonic() + 30
    while not (listed := client.get(f"{JOBS}/{job_id}/evaluations").json()["data"]):
        assert time.monotonic() < deadline, "the job started no evaluation"
        time.sleep(0.2)
    [evaluation] = listed
    return dict(evaluation)


def test_the_fine_tuned_model_beats_its_base_model(client: TestClient, worker) -> None:  # type: ignore[no-untyped-def]
    qa = upload_ok(client, (EXAMPLES / "short_answers.jsonl").read_bytes(), "short_answers.jsonl")
    # The job evaluates itself once it succeeded: the whole file, Persian questions included.
    own = {"file": qa, "max_tokens": 4}
    spec = {"model": "tiny-llama", "training_file": qa, **TRAINING}
    created = client.post(JOBS, json=spec | {"qlora": TRAINING["qlora"] | {"evaluation": own}})
    assert created.status_code == 200, created.text
    job = wait_for(client, created.json()["id"], {"succeeded"})
    whole = own_evaluation(client, job["id"])

    asked = client.post(
        f"{JOBS}/{job['id']}/evaluations", json={"file": qa, "max_examples": 6, "sample_size": 2, "max_tokens": 4}
    )
    assert asked.status_code == 200, asked.text
    evaluation = wait_for(client, asked.json()["id"], {"succeeded"}, collection=f"{JOBS}/{job['id']}/evaluations")

    base, tuned = evaluation["results"]["base"], evaluation["results"]["fine_tuned"]
    assert base["n"] == tuned["n"] == 6 and evaluation["results"]["tokens"] > 0
    assert tuned["exact_match"] > base["exact_match"] and tuned["f1"] > base["f1"]
    assert tuned["exact_match"] == 1.0  # every answer exactly "Paris", in English and in Persian
    assert tuned["loss"] < base["loss"] and tuned["perplexity"] == pytest.approx(math.exp(tuned["loss"]))
    assert evaluation["runtime"] == {"device": "cpu", "compute_dtype": "float32"} and evaluation["attempts"] == 1

    sample = evaluation["sample"]
    assert len(sample) == 2 and all(s["reference"] == "Paris" for s in sample)
    assert sample[0]["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")  # the chat template's
    assert "What is the capital of France?" in sample[0]["prompt"]
    assert sample[0]["fine_tuned_answer"] == "Paris" and sample[0]["base_answer"] != "Paris"

    [file_id] = evaluation["result_files"]
    assert client.get(f"/v1/files/{file_id}").json()["purpose"] == "fine-tune-results"
    download = client.get(f"/v1/files/{file_id}/content")
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 6
    assert [r["prompt"] for r in rows[:2]] == [s["prompt"] for s in sample]
    assert sum(float(r["fine_tuned_exact_match"]) for r in rows) / 6 == tuned["exact_match"]
    assert sum(float(r["base_f1"]) for r in rows) / 6 == pytest.approx(base["f1"])
    assert "پایتخت" not in "".join(r["prompt"] for r in rows)  # the first 6 examples are the English ones

    messages = [e["message"] for e in all_events(client, job["id"])]
    summary = next(m for m in messages if m.startswith(f"Evaluation {evaluation['id']}: succeeded"))
    assert f"on 6 examples of {qa}: exact match {base['exact_match']:.3g} -> 1, F1 " in summary
    assert "(base -> fine-tuned)" in summary

    whole = wait_for(client, whole["id"], {"succeeded"}, collection=f"{JOBS}/{job['id']}/evaluations")
    assert whole["results"]["fine_tuned"]["n"] == 12 and whole["results"]["fine_tuned"]["exact_match"] == 1.0
    assert len(whole["sample"]) == 5 and (whole["max_tokens"], whole["file"]) == (4, qa)


def test_an_evaluation_whose_file_was_deleted_fails_naming_it(client: TestClient, worker, chat_file: str) -> None:  # type: ignore[no-untyped-def]
    job_id = succeeded_job(TEST_ORG, chat_file).rsplit(":", 1)[1]
    doomed = upload_ok(client, (EXAMPLES / "short_answers.jsonl").read_bytes(), "short_answers.jsonl")
    evaluation_id = unsent_evaluation(TEST_ORG, job_id, doomed)  # not sent yet: the file goes first
    assert client.delete(f"/v1/files/{doomed}").status_code == 200
    assert evaluations.RUNS.publish(evaluation_id)
    failed = wait_for(client, evaluation_id, {"failed"}, collection=f"{JOBS}/{job_id}/evaluations")
    assert failed["error"] == {
        "code": "file_not_found",
        "message": f"File {doomed} was deleted before the evaluation ran",
        "param": "file",
    }
    assert failed["results"] is None and failed["result_files"] == [] and failed["finished_at"] is not None
    messages = [e["message"] for e in all_events(client, job_id)]
    assert f"Evaluation {evaluation_id}: Evaluation failed (file_not_found): File {doomed} was deleted" in "\n".join(
        messages
    )
