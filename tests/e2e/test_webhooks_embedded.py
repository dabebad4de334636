"""Webhooks in the embedded mode (`ftsvc serve`: SQLite, the SQLite broker, and the
pre-flight worker, which sends them on its own queue): a job cancelled through the API
reaches a receiver on 127.0.0.1, signed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.helpers import (
    EXAMPLES,
    Receiver,
    free_port,
    readme_verify,
    start_embedded_service,
    stop_embedded_service,
)


def test_the_embedded_service_delivers_a_cancelled_jobs_event(tmp_path: Path) -> None:
    receiver = Receiver()
    port, data = free_port(), tmp_path / "var"
    allowed = {"FTSVC_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32", "FTSVC_WEBHOOK_ALLOW_HTTP": "true"}
    server = start_embedded_service(data, port, tmp_path / "serve.log", **allowed)
    try:
        key = (data / "local-api-key").read_text().strip()
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", headers={"Authorization": f"Bearer {key}"})
        webhook = api.post("/organization/webhooks", json={"url": receiver.url}).json()
        content = (EXAMPLES / "chat.jsonl").read_bytes()
        upload = api.post("/files", data={"purpose": "fine-tune"}, files={"file": ("chat.jsonl", content)})
        job = api.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": upload.json()["id"]})
        assert api.post(f"/fine_tuning/jobs/{job.json()['id']}/cancel").status_code == 200
        request = receiver.next(timeout=60)
        assert readme_verify()(webhook["secret"], request.headers, request.body)
        event = json.loads(request.body)
        assert event["type"] == "fine_tuning.job.cancelled" and event["data"] == {"id": job.json()["id"]}
        [delivery] = api.get(f"/organization/webhooks/{webhook['id']}/deliveries").json()["data"]
        assert delivery["event"] == event
    finally:
        stop_embedded_service(server)
        receiver.server.shutdown()
