"""The dashboard as a person uses it, in headless Chromium against the served API: signing
in (and a wrong key's error), the live jobs list, the upload and job forms with the
API's errors, a running job's curves gaining points by themselves, and downloads that
carry the key. Each test saves screenshots in its tmp_path."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from core.auth import create_key, revoke_key
from core.db import session_scope
from tests.browser.conftest import BROWSER_ORG, Dashboard
from tests.conftest import Workers
from tests.helpers import EXAMPLES, chat, jsonl, unsent_queued_job, wait_for

Screenshot = Callable[[str], Path]


def upload_chat(dashboard: Dashboard) -> str:
    response = dashboard.api.post(
        "/v1/files",
        files={"file": ("chat.jsonl", (EXAMPLES / "chat.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def create_job(dashboard: Dashboard, file_id: str, **training: Any) -> str:
    body = {
        "model": "tiny-llama",
        "training_file": file_id,
        "qlora": {"training": {"learning_rate": 0.01, **training}, "data": {"validation_split": 0.2}},
    }
    response = dashboard.api.post("/v1/fine_tuning/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def job_row(page: Page, job_id: str) -> Any:
    return page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')


def open_job(page: Page, job_id: str) -> None:
    job_row(page, job_id).locator("a").click()
    expect(page.locator("#job-page")).to_have_attribute("data-job-id", job_id)


def saved_download(page: Page, button: Any) -> Path:
    with page.expect_download() as download:
        button.click()
    return Path(download.value.path())


def test_a_wrong_key_shows_the_apis_error_and_keeps_nothing(
    page: Page, dashboard: Dashboard, screenshot: Screenshot
) -> None:
    dashboard.sign_in(page, "ftsk-not-a-key-of-anyone")
    error = page.locator("#sign-in-error .error")
    expect(error).to_contain_text("Invalid or revoked API key")
    expect(error).to_have_attribute("data-code", "invalid_api_key")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    screenshot("wrong-key")


def test_a_key_revoked_while_signed_in_signs_the_page_out(page: Page, dashboard: Dashboard) -> None:
    with session_scope() as session:
        row, key = create_key(session, BROWSER_ORG, "revoked-in-the-browser")
    dashboard.sign_in(page, key)
    expect(page.locator("#jobs-updated")).to_contain_text("updated")
    with session_scope() as session:
        revoke_key(session, row.id)
    # Refused within the API's auth cache (FTSVC_AUTH_CACHE_SECONDS), at the list's next poll.
    expect(page.locator("#sign-in-error .error")).to_contain_text("Signed out: Invalid or revoked API key")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_signed_in_the_page_lists_the_jobs_live(page: Page, dashboard: Dashboard, screenshot: Screenshot) -> None:
    file_id = upload_chat(dashboard)
    first = unsent_queued_job(BROWSER_ORG, file_id)  # queued, and no worker takes it
    try:
        dashboard.sign_in(page)
        expect(job_row(page, first).locator(".status")).to_have_text("queued")
        expect(job_row(page, first)).to_contain_text("in queue")

        # The list follows the API without a reload: a new job appears, a cancel shows.
        second = unsent_queued_job(BROWSER_ORG, file_id)
        expect(job_row(page, second)).to_be_visible()
        assert dashboard.api.post(f"/v1/fine_tuning/jobs/{second}/cancel").status_code == 200
        expect(job_row(page, second).locator(".status")).to_have_text("cancelled")
        screenshot("jobs")

        # The key lives in the tab: a reload keeps the sign-in, signing out forgets it.
        page.reload()
        open_job(page, first)
        expect(page.locator("#job-page .job-head .status")).to_have_text("queued")
        page.click("#sign-out")
        expect(page.locator("#sign-in")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
    finally:
        dashboard.api.post(f"/v1/fine_tuning/jobs/{first}/cancel")


def test_upload_and_job_creation_through_the_forms(
    page: Page, dashboard: Dashboard, screenshot: Screenshot, tmp_path: Path
) -> None:
    dashboard.sign_in(page)
    page.click("#nav-new")
    file_input = page.locator("#upload-form input[type=file]")

    # A file with problems: the API's answer, each problem where it is.
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(chat(), {"messages": [{"role": "user", "content": "Hi"}]}, {"messages": "x"}))
    file_input.set_input_files(bad)
    page.click("#upload-form button[type=submit]")
    error = page.locator("#upload-result .error")
    expect(error).to_have_attribute("data-code", "invalid_file")
    expect(error.locator("li")).to_have_count(2)
    expect(error.locator("li").first).to_contain_text("line 2, field messages")

    file_input.set_input_files(EXAMPLES / "chat.jsonl")
    page.click("#upload-form button[type=submit]")
    uploaded = page.locator("#upload-result .notice")
    expect(uploaded).to_contain_text("36 examples, format chat (jsonl)")
    file_id = uploaded.get_attribute("data-file-id")
    expect(page.locator(f'#files-table tr[data-file-id="{file_id}"]')).to_contain_text("processed")
    expect(page.locator("#job-form select[name=training_file]")).to_have_value(str(file_id))

    # What is trained: the examples through the model's template, trained spans marked.
    page.click("#preview-button")
    expect(page.locator("#job-form-preview .example mark").first).to_contain_text("The capital of Iran is Tehran.")

    # A field the API refuses: its message, and the field marked.
    page.fill("#job-form input[name=suffix]", "not a suffix!")
    page.fill("#job-form input[name=n_epochs]", "100")
    page.click("#job-form button[type=submit]")
    refused = page.locator("#job-form-result .error")
    expect(refused).to_have_attribute("data-param", "suffix")
    expect(page.locator("#job-form input[name=suffix]")).to_have_attribute("aria-invalid", "true")
    page.fill("#job-form input[name=suffix]", "browser")
    page.click("#job-form button[type=submit]")
    expect(refused).to_have_attribute("data-param", "method.supervised.hyperparameters.n_epochs")
    expect(refused).to_contain_text("must be at most 50")
    expect(page.locator("#job-form input[name=n_epochs]")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#job-form input[name=suffix]")).not_to_have_attribute("aria-invalid", "true")
    page.fill("#job-form textarea[name=extra]", "{not json")
    page.click("#job-form button[type=submit]")
    expect(refused).to_contain_text("not valid JSON")
    expect(page.locator("#job-form textarea[name=extra]")).to_have_attribute("aria-invalid", "true")
    screenshot("refused")

    page.fill("#job-form input[name=n_epochs]", "")
    page.fill("#job-form input[name=max_steps]", "1000")
    page.fill("#job-form textarea[name=extra]", '{"metadata": {"made": "in the browser"}}')
    page.click("#job-form button[type=submit]")
    expect(page.locator("#job-page")).to_be_visible()
    job_id = str(page.locator("#job-page").get_attribute("data-job-id"))
    job = dashboard.api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
    assert (job["training_file"], job["user_provided_suffix"]) == (file_id, "browser")
    assert job["metadata"] == {"made": "in the browser"} and job["qlora"]["training"]["max_steps"] == 1000
    expect(job_row(page, job_id)).to_be_visible()
    expect(page.locator("#statistics")).to_contain_text("36")  # the pre-flight worker's figures
    screenshot("created")

    page.click('button[data-action="cancel"]')
    expect(page.locator("#job-page .job-head .status")).to_have_text("cancelled")
    expect(page.locator('button[data-action="cancel"]')).to_be_disabled()


@pytest.mark.slow
def test_a_running_jobs_curves_gain_points_by_themselves(
    page: Page, dashboard: Dashboard, worker: Workers, screenshot: Screenshot
) -> None:
    job_id = create_job(dashboard, upload_chat(dashboard), max_steps=5000, eval_steps=3, checkpoint_steps=3)
    try:
        dashboard.sign_in(page)
        open_job(page, job_id)
        train = '[data-chart="loss"] path[data-series="train-loss"]'
        expect(page.locator(train)).to_be_attached(timeout=180_000)  # the model loads first
        points = int(str(page.locator(train).get_attribute("data-points")))
        page.wait_for_function(
            "([selector, n]) => Number(document.querySelector(selector).dataset.points) > n", arg=[train, points]
        )
        expect(page.locator('[data-chart="loss"] path[data-series="valid-loss"]')).to_be_attached()
        for chart, series in (("learning-rate", "learning-rate"), ("tokens-per-second", "tokens-per-second")):
            expect(page.locator(f'[data-chart="{chart}"] path[data-series="{series}"]')).to_be_attached()
        expect(page.locator('[data-latest="train loss"]')).to_be_visible()
        expect(job_row(page, job_id)).to_contain_text("/ 5000")
        expect(page.locator("#job-page .job-head .status")).to_have_text("running")
        screenshot("running")

        # A checkpoint's adapter, downloaded with the key: the bytes the API stored.
        checkpoint = page.locator("#checkpoints-table tbody tr").first
        checkpoint_id = checkpoint.get_attribute("data-checkpoint")
        saved = saved_download(page, checkpoint.locator("button[data-download]"))
        stored = dashboard.api.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"]
        digest = next(c["adapter_sha256"] for c in stored if c["id"] == checkpoint_id)
        assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest

        page.click('button[data-action="cancel"]')
        expect(page.locator("#job-page .job-head .status")).to_have_text("cancelled")
        expect(job_row(page, job_id).locator(".status")).to_have_text("cancelled")
    finally:
        dashboard.api.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")


@pytest.mark.slow
def test_a_finished_job_offers_its_adapter_and_metrics(
    page: Page, dashboard: Dashboard, worker: Workers, screenshot: Screenshot
) -> None:
    job_id = create_job(dashboard, upload_chat(dashboard), max_steps=6)
    job = wait_for(dashboard.api, job_id, {"succeeded"})  # type: ignore[arg-type]
    dashboard.sign_in(page)
    open_job(page, job_id)
    expect(page.locator('[data-chart="loss"] path[data-series="train-loss"]')).to_have_attribute("data-points", "6")

    saved = saved_download(page, page.locator('button[data-download="adapter"]'))
    artifact = dashboard.api.get(f"/v1/fine_tuning/jobs/{job_id}/artifacts/adapter")
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact.headers["x-artifact-sha256"]
    with tarfile.open(saved) as archive:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {Path(n).name for n in archive.getnames()}
    expect(page.locator("#job-page")).to_contain_text(f"Saved {job_id}")  # the API's file name

    assert len(job["result_files"]) == 3  # the metrics CSV, TensorBoard events, MLflow's CSV
    for results in job["result_files"]:
        saved_file = saved_download(page, page.locator(f'button[data-download="{results}"]'))
        assert saved_file.read_bytes() == dashboard.api.get(f"/v1/files/{results}/content").content
    screenshot("succeeded")
    assert json.loads(page.evaluate("JSON.stringify(sessionStorage)")) == {"ftsvc.apiKey": dashboard.key}
