"""The active-jobs quota under concurrency: 30 creates for one organization at once, on
a real API process (uvicorn's thread pool runs them side by side) and Postgres, accept
exactly the organization's limit and refuse the rest with 429."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.auth import create_key, create_organization
from core.db import session_scope
from core.settings import get_settings
from tests.faults.test_upload_faults import Api
from tests.helpers import EXAMPLES, upload_ok

CREATES = 30


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    server.start()
    yield server
    server.kill()


def post_job(port: int, key: str, file_id: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/fine_tuning/jobs",
        data=json.dumps({"model": "tiny-llama", "training_file": file_id}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def test_simultaneous_creates_cannot_pass_the_active_jobs_quota(api: Api, client_module) -> None:  # type: ignore[no-untyped-def]
    limit = get_settings().max_active_jobs_per_org
    assert limit < CREATES
    with session_scope() as session:
        org = create_organization(session, "racers")
        key = create_key(session, org.id)[1]
    client_module.headers["Authorization"] = f"Bearer {key}"
    file_id = upload_ok(client_module, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")

    with ThreadPoolExecutor(CREATES) as pool:
        answers = list(pool.map(lambda _: post_job(api.port, key, file_id), range(CREATES)))

    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: limit, 429: CREATES - limit}, answers
    refusals = {body["error"]["code"] for status, body in answers if status == 429}  # type: ignore[index]
    assert refusals == {"active_jobs_quota_exceeded"}
    for status, body in answers:  # leave nothing for the training worker of later tests
        if status == 200:
            client_module.post(f"/v1/fine_tuning/jobs/{body['id']}/cancel")
