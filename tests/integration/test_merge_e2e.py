"""The whole path of a merge with a real Celery worker: a tiny QLoRA job, its model merged
into the full-precision base and registered, the archive downloaded, extracted and
loaded with transformers (equal to the base with its adapter, and generating), then the
registered model fine-tuned again and that job's model merged onto it."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from core.settings import get_settings
from tests.conftest import OTHER_ORG, make_client
from tests.helpers import EXAMPLES, all_events, assert_error, upload_ok, wait_for

pytestmark = pytest.mark.slow

TRAINING = {"qlora": {"training": {"learning_rate": 0.01, "max_steps": 6}}}
MERGES = "/v1/merges"


def train(client: TestClient, model: str, training_file: str) -> dict[str, Any]:
    created = client.post("/v1/fine_tuning/jobs", json={"model": model, "training_file": training_file, **TRAINING})
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"})


def merged(client: TestClient, model: str, **body: Any) -> dict[str, Any]:
    created = client.post(f"/v1/models/{model}/merge", json=body)
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"}, collection=MERGES)


def extract(client: TestClient, url: str, target: Path) -> tuple[bytes, list[str]]:
    download = client.get(url)
    assert download.status_code == 200, download.text
    assert download.headers["x-artifact-sha256"] == hashlib.sha256(download.content).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        names = tar.getnames()
        tar.extractall(target, filter="data")
    return download.content, names


def test_merge_download_load_register_and_fine_tune_again(  # type: ignore[no-untyped-def]
    client, worker, tiny_model: Path, api_keys: dict[str, str], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    training = upload_ok(client, (EXAMPLES / "chat.jsonl").read_bytes(), "chat.jsonl")
    job = train(client, "tiny-llama", training)
    merge = merged(client, job["fine_tuned_model"], register_as="tiny-merged")
    assert merge["runtime"] == {"device": "cpu", "dtype": "float32"} and merge["attempts"] == 1
    folder_name = f"ft-tiny-llama-org-test-{job['id']}"  # the model's name, as its adapter's folder
    assert merge["archive"]["filename"] == f"{folder_name}.tar" and merge["register_as"] == "tiny-merged"
    messages = [e["message"] for e in all_events(client, merge["id"], MERGES)]
    assert messages[0].startswith(f"Merge of {job['fine_tuned_model']} (lora) into tiny-llama queued")
    assert any(m.startswith("Merged in float32 on cpu: 1 safetensors shards") for m in messages)
    assert messages[-1].startswith(f"Merge succeeded: {folder_name}.tar published")

    content, names = extract(client, f"{MERGES}/{merge['id']}/content", tmp_path)
    assert (len(content), hashlib.sha256(content).hexdigest()) == (
        merge["archive"]["bytes"],
        merge["archive"]["sha256"],
    )
    folder = tmp_path / folder_name
    assert {name.split("/")[0] for name in names} == {folder.name}  # one folder
    files = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    } <= files
    card = (folder / "README.md").read_text()  # the model card, as a merged model's
    assert "library_name: transformers" in card and "adapter trained by supervised fine-tuning" in card

    # The merged model is the base with its adapter (unmerged, in full precision), and generates.
    extract(client, f"/v1/fine_tuning/jobs/{job['id']}/artifacts/adapter", tmp_path / "adapter")
    model = AutoModelForCausalLM.from_pretrained(folder)
    adapter = tmp_path / "adapter" / folder_name
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        assert (model(ids).logits - with_adapter(ids).logits).abs().max() <= 1e-5
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4

    # Registered: a base model of this organization alone.
    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed["tiny-merged"]["owned_by"] == "org-test" and listed["tiny-llama"]["owned_by"] == "local"
    with make_client(api_keys[OTHER_ORG]) as other:
        assert "tiny-merged" not in [m["id"] for m in other.get("/v1/models").json()["data"]]
        spec = {"model": "tiny-merged", "training_file": "file-x"}
        assert_error(other.post("/v1/fine_tuning/jobs", json=spec), 400, param="model", code="model_not_found")
    error = assert_error(
        client.post(f"/v1/models/{job['fine_tuned_model']}/merge", json={"register_as": "tiny-merged"}), 409
    )
    assert error["code"] == "model_exists"

    # Merged into the 4-bit weights it was trained against, dequantized: a model of its own.
    dequantized = merged(client, job["fine_tuned_model"], base_weights="dequantized")
    assert dequantized["base_weights"] == "dequantized" and dequantized["register_as"] is None
    messages = [e["message"] for e in all_events(client, dequantized["id"], MERGES)]
    assert any("into tiny-llama (its 4-bit weights, dequantized)" in m for m in messages)
    assert dequantized["archive"]["sha256"] != merge["archive"]["sha256"]

    # Fine-tuned again (the pre-flight and training workers extract it from storage), and merged onto it.
    second = train(client, "tiny-merged", training)
    assert any("Extracting the registered model tiny-merged" in e["message"] for e in all_events(client, second["id"]))
    assert second["statistics"]["examples"] > 0
    cache = get_settings().model_cache_root
    tokenizer_only = cache / f"{merge['id']}.tokenizer"  # the pre-flight's: no weights
    assert (tokenizer_only / "tokenizer.json").is_file() and not list(tokenizer_only.glob("*.safetensors"))
    assert (cache / merge["id"] / "model.safetensors").is_file()  # the training worker's: the whole model
    again = merged(client, second["fine_tuned_model"])
    assert again["base_model"] == "tiny-merged"
    assert again["archive"]["filename"] == f"ft-tiny-merged-org-test-{second['id']}.tar"

    # Merged models count against the organization's storage quota.
    stored = client.get("/v1/organization/usage").json()["storage"]["by_kind"]["merged_models"]
    assert stored >= sum(m["archive"]["bytes"] for m in (merge, dequantized, again))
