"""The API process imports no training stack: a fresh interpreter builds the app, serves
a request on every route, and neither torch nor transformers (nor the rest of the stack)
has been imported. Tokenizer work runs in the pre-flight worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import EXAMPLES, ROOT, stored_checkpoint

HEAVY = ("torch", "transformers", "tokenizers", "peft", "trl", "bitsandbytes", "accelerate", "datasets")


def serve_every_route(key: str) -> None:
    """Run in a fresh interpreter: one request on each route of the app, then report what
    was served and which heavy modules were imported."""
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    from api.app import create_app

    app = create_app()
    client = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
    served: dict[str, int] = {}

    def call(method: str, template: str, url: str, **kwargs: object) -> dict[str, object]:
        response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        served[f"{method} {template}"] = response.status_code
        ok = response.headers.get("content-type", "").startswith("application/json")
        return response.json() if ok else {}

    files, jobs = "/v1/files", "/v1/fine_tuning/jobs"
    chat = call(
        "POST",
        files,
        files,
        files={"file": ("chat.jsonl", (EXAMPLES / "chat.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
    )
    parquet = call(
        "POST",
        files,
        files,
        files={"file": ("t.parquet", (EXAMPLES / "text.parquet").read_bytes())},
        data={"purpose": "fine-tune"},
    )
    file_id = str(chat["id"])
    call("GET", files, files)
    call("GET", f"{files}/{{file_id}}", f"{files}/{file_id}")
    call("GET", f"{files}/{{file_id}}/content", f"{files}/{file_id}/content")
    call("GET", f"{files}/{{file_id}}/preview", f"{files}/{file_id}/preview", params={"model": "tiny-llama", "n": 1})
    call("DELETE", f"{files}/{{file_id}}", f"{files}/{parquet['id']}")
    created = call("POST", jobs, jobs, json={"model": "tiny-llama", "training_file": file_id})
    assert "id" in created, created
    job_id = str(created["id"])
    checkpoint_id = stored_checkpoint(job_id)
    job = f"{jobs}/{{fine_tuning_job_id}}"
    call("GET", jobs, jobs)
    call("GET", job, f"{jobs}/{job_id}")
    for action in ("pause", "resume", "cancel"):
        call("POST", f"{job}/{action}", f"{jobs}/{job_id}/{action}")
    for read in ("checkpoints", "events", "metrics", "metrics.png", "events/stream"):
        call("GET", f"{job}/{read}", f"{jobs}/{job_id}/{read}")
    call(
        "GET",
        f"{job}/checkpoints/{{checkpoint_id}}/adapter",
        f"{jobs}/{job_id}/checkpoints/{checkpoint_id}/adapter",
    )
    call("GET", f"{job}/artifacts/{{kind}}", f"{jobs}/{job_id}/artifacts/adapter")
    call("GET", "/v1/models", "/v1/models")
    call("GET", "/healthz", "/healthz")
    call("GET", "/readyz", "/readyz")
    call("GET", "/metrics", "/metrics")
    for page in ("/openapi.json", "/docs", "/redoc", "/", "/dashboard/js/main.js"):
        call("GET", page, page)

    routes = [f"{m} {r.path}" for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    print(json.dumps({"routes": routes, "served": served, "imported": [m for m in HEAVY if m in sys.modules]}))


def test_the_api_serves_every_route_without_the_training_stack(
    api_keys: dict[str, str], preflight_worker: object, tiny_model: Path
) -> None:
    # (tests.conftest is not imported here: the child would import it too, and its
    # import sets up a new data directory.)
    key = api_keys["org-test"]
    script = f"from tests.integration.test_api_stays_light import serve_every_route; serve_every_route({key!r})"
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(report["routes"]) <= report["served"].keys(), set(report["routes"]) - report["served"].keys()
    failed = {route: status for route, status in report["served"].items() if status >= 500}
    assert not failed, failed
    assert report["served"]["GET /v1/files/{file_id}/preview"] == 200  # rendered by the pre-flight worker
    assert report["imported"] == [], f"the API process imported {report['imported']}"
