"""GET /v1/fine_tuning/jobs/{id}/metrics.png: the job's curves drawn by the API, decoded
here as the PNG it claims to be."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread

from api.charts import DPI, HEIGHT_INCHES, WIDTH_INCHES
from core.db import session_scope
from core.events import record_metric
from tests.conftest import OTHER_ORG, TEST_ORG, make_client
from tests.helpers import EXAMPLES, assert_error, unsent_queued_job, upload_ok

SIZE = (round(HEIGHT_INCHES * DPI), round(WIDTH_INCHES * DPI))  # rows, columns
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def picture(client: TestClient, job_id: str) -> np.ndarray:
    response = client.get(f"/v1/fine_tuning/jobs/{job_id}/metrics.png")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    pixels = imread(io.BytesIO(response.content), format="png")
    assert pixels.shape[:2] == SIZE
    return pixels


def coloured(pixels: np.ndarray, rgb: tuple[int, int, int]) -> int:
    """How many pixels have this colour (within a little anti-aliasing)."""
    return int((np.abs(pixels[..., :3] - np.array(rgb) / 255).max(axis=-1) < 0.05).sum())


# matplotlib's tab:blue, tab:orange and tab:green: the train loss, validation loss and
# learning rate lines (api.charts).
TRAIN, VALID, RATE = (31, 119, 180), (255, 127, 14), (44, 160, 44)


@pytest.fixture
def queued_job(client: TestClient) -> str:
    """A job of TEST_ORG that no worker takes: its metrics are the ones the test writes."""
    return unsent_queued_job(TEST_ORG, upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl"))


def test_a_job_with_metrics_draws_its_curves(client: TestClient, queued_job: str) -> None:
    empty = picture(client, queued_job)
    assert coloured(empty, TRAIN) == coloured(empty, VALID) == coloured(empty, RATE) == 0
    with session_scope() as session:  # the points a worker records while training
        for step in range(1, 21):
            values = {"loss": 3 * math.exp(-step / 8), "learning_rate": 1e-3 * (1 - step / 20), "epoch": step / 10}
            record_metric(session, queued_job, step, values)
            if step % 5 == 0:
                record_metric(session, queued_job, step, {"loss": 3.2 * math.exp(-step / 9)}, split="valid")
    drawn = picture(client, queued_job)
    assert coloured(drawn, TRAIN) > 300 and coloured(drawn, VALID) > 300 and coloured(drawn, RATE) > 300


def test_another_organizations_job_is_404(api_keys: dict[str, str], client: TestClient, queued_job: str) -> None:
    with make_client(api_keys[OTHER_ORG]) as other:
        assert_error(other.get(f"/v1/fine_tuning/jobs/{queued_job}/metrics.png"), 404, code="not_found")
    assert_error(client.get("/v1/fine_tuning/jobs/ftjob-nonexistent/metrics.png"), 404, code="not_found")


def test_openapi_documents_a_png(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/fine_tuning/jobs/{fine_tuning_job_id}/metrics.png"]
    assert list(operation["get"]["responses"]["200"]["content"]) == ["image/png"]
