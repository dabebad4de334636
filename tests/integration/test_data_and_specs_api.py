"""Job creation and its pre-flight with the base model's tokenizer (in the pre-flight
worker): statistics, pre-flight refusals, adapter parameter checks, and the preview
endpoint. No training worker: created jobs are cancelled."""

from __future__ import annotations

import pytest

from tests.helpers import EXAMPLES, assert_error, chat, jsonl, upload_ok, wait_for


def create(client, **body):  # type: ignore[no-untyped-def]
    response = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", **body})
    if response.status_code == 200:
        client.post(f"/v1/fine_tuning/jobs/{response.json()['id']}/cancel")
    return response


def preflight(client, **body):  # type: ignore[no-untyped-def]
    """Create a job and wait for its pre-flight's verdict: queued (then cancelled) or failed."""
    response = client.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama", **body})
    assert response.status_code == 200, response.text
    job = wait_for(client, response.json()["id"], {"queued", "failed"}, timeout=120)
    client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    return job


def test_statistics_are_computed_with_the_models_tokenizer(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    job = preflight(client_module, training_file=chat_file, qlora={"training": {"max_seq_length": 48}})
    assert job["status"] == "queued"
    stats = job["statistics"]
    assert stats["examples"] == 36 and stats["max_seq_length"] == 48
    assert stats["tokens_min"] <= stats["tokens_mean"] <= stats["tokens_p95"] <= stats["tokens_max"]
    assert stats["tokens_total"] > stats["trainable_tokens"] > 0
    assert 0 < stats["truncated_examples"] < 36  # the system-prompt examples are longer than 48 tokens
    assert stats["chat_template"] == "model" and stats["eos_appended"] is False
    events = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert any(e["message"].startswith("Training data: 36 examples") for e in events)


def test_nothing_left_to_train_after_truncation_fails_the_pre_flight(client_module) -> None:  # type: ignore[no-untyped-def]
    long_prompts = upload_ok(client_module, jsonl(*[chat("word " * 100, "ok") for _ in range(3)]))
    job = preflight(client_module, training_file=long_prompts, qlora={"training": {"max_seq_length": 32}})
    assert job["status"] == "failed" and job["statistics"] is None
    error = job["error"]
    assert (error["code"], error["param"]) == ("no_trainable_tokens", "qlora.training.max_seq_length")
    assert "None of the 3 examples" in error["message"]
    events = client_module.get(f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    assert events[0]["level"] == "error" and events[0]["message"].startswith("Pre-flight failed (no_trainable_tokens)")
    assert any(e["message"].startswith("Pre-flight started on ") for e in events)


def test_pre_flight_resolves_auto_hyperparameters_from_the_examples_that_train(client_module) -> None:  # type: ignore[no-untyped-def]
    # 40 examples, of which 20 lose every trained token to truncation: "auto" is resolved
    # from the 20 that train (batch 20 // 4 = 5), not the file's 40 (batch 10 at creation).
    mixed = upload_ok(client_module, jsonl(*[chat("hi", "ok")] * 20, *[chat("word " * 100, "ok")] * 20))
    created = client_module.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": mixed, "qlora": {"training": {"max_seq_length": 32}}},
    ).json()
    assert created["hyperparameters"]["batch_size"] == 10
    job = wait_for(client_module, created["id"], {"queued"}, timeout=120)
    client_module.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert job["statistics"]["examples_without_trainable_tokens"] == 20
    assert (
        job["hyperparameters"]["batch_size"] == 5 and job["method"]["supervised"]["hyperparameters"]["batch_size"] == 5
    )


@pytest.mark.parametrize(
    ("qlora", "param", "words"),
    [
        ({"adapter": {"type": "ia3", "r": 8}}, "qlora.adapter.r", "not a parameter of the ia3 adapter"),
        (
            {"adapter": {"type": "prompt_tuning", "target_modules": ["q_proj"]}},
            "qlora.adapter.target_modules",
            "not a parameter of the prompt_tuning adapter",
        ),
        (
            {"adapter": {"type": "lora", "num_virtual_tokens": 8}},
            "qlora.adapter.num_virtual_tokens",
            "not a parameter of the lora adapter",
        ),
        ({"adapter": {"type": "adalora", "init_r": 4, "target_r": 8}}, "qlora.adapter", "target_r"),
        ({"adapter": {"type": "ia3", "feedforward_modules": ["up_proj"]}}, "qlora.adapter", "subset"),
        ({"adapter": {"type": "vera"}}, "qlora.adapter.type", "unknown adapter type 'vera'; one of: lora, adalora"),
        ({"adapter": {"type": "loha"}, "quantization": {"bits": 4}}, "qlora", "quantization to null"),
        ({"adapter": {"type": "p_tuning"}, "data": {"packing": True}}, "qlora", "packing to false"),
        ({"data": {"format": "qa"}}, "qlora.data.format", "validated as 'chat'"),
        ({"data": {"validation_split": 0.7}}, "qlora.data.validation_split", "less than 0.5"),
        ({"resources": {"gpus": 9}}, "qlora.resources.gpus", "must be at most 8 (got 9)"),
        ({"resources": {"gpus": 0}}, "qlora.resources.gpus", "must be at least 1 (got 0)"),
        ({"resources": {"gpu": 2}}, "qlora.resources.gpu", "gpu"),
    ],
)
def test_adapter_and_data_options_that_do_not_apply_are_refused(client_module, chat_file, qlora, param, words) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(create(client_module, training_file=chat_file, qlora=qlora), 400, param)
    assert words in error["message"]


def test_multitask_prompt_tuning_takes_its_tasks_from_the_training_file(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    multitask = upload_ok(client_module, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    counts = {"arithmetic": 12, "spelling": 12}
    mpt = {"adapter": {"type": "multitask_prompt_tuning", "num_virtual_tokens": 4}}
    job = preflight(client_module, training_file=multitask, validation_file=multitask, qlora=mpt)
    assert job["status"] == "queued" and job["qlora"]["data"]["tasks"] == ["arithmetic", "spelling"]
    assert job["qlora"]["data"]["packing"] is False and job["statistics"]["tasks"] == counts
    # Any other adapter trains on the same file and ignores its tasks (still counted).
    lora = preflight(client_module, training_file=multitask)
    assert lora["status"] == "queued" and lora["qlora"]["data"]["tasks"] is None
    assert lora["statistics"]["tasks"] == counts
    assert preflight(client_module, training_file=chat_file)["statistics"]["tasks"] is None


def test_multitask_prompt_tuning_refuses_data_without_its_tasks(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    multitask = upload_ok(client_module, (EXAMPLES / "multitask.jsonl").read_bytes(), "multitask.jsonl")
    poetry = upload_ok(client_module, jsonl(chat("A poem?", "Roses.") | {"task": "poetry"}))
    mpt = {"adapter": {"type": "multitask_prompt_tuning"}}
    refused = create(client_module, training_file=chat_file, qlora=mpt)
    error = assert_error(refused, 400, "training_file", "missing_tasks")
    assert f"the examples of training_file {chat_file} have no `task` field" in error["message"]
    refused = create(client_module, training_file=multitask, validation_file=chat_file, qlora=mpt)
    assert chat_file in assert_error(refused, 400, "validation_file", "missing_tasks")["message"]
    refused = create(client_module, training_file=multitask, validation_file=poetry, qlora=mpt)
    error = assert_error(refused, 400, "validation_file", "unknown_task")
    assert f"validation_file {poetry} has task 'poetry'" in error["message"]
    assert "'arithmetic', 'spelling'" in error["message"]


def test_validation_file_and_split_are_exclusive(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(
        create(
            client_module, training_file=chat_file, validation_file=chat_file, qlora={"data": {"validation_split": 0.1}}
        ),
        400,
    )
    assert "either validation_file or qlora.data.validation_split" in error["message"]


def test_loha_defaults_to_an_unquantized_base(client_module, chat_file) -> None:  # type: ignore[no-untyped-def]
    job = preflight(client_module, training_file=chat_file, qlora={"adapter": {"type": "loha"}})
    assert job["qlora"]["quantization"] is None and job["qlora"]["adapter"]["type"] == "loha"


def test_preview_marks_what_is_trained(client_module) -> None:  # type: ignore[no-untyped-def]
    file_id = upload_ok(client_module, (EXAMPLES / "qa_persian.jsonl").read_bytes(), "qa_persian.jsonl")
    preview = client_module.get(f"/v1/files/{file_id}/preview", params={"model": "tiny-llama", "n": 2}).json()
    assert preview["format"] == "qa" and len(preview["data"]) == 2
    first = preview["data"][0]
    assert first["marked"].endswith("[[تهران<|eot_id|>]]")
    assert "Question: پایتخت ایران کدام شهر است؟" in first["marked"]
    assert first["trained_tokens"] == sum(s["tokens"] for s in first["segments"] if s["trained"])
    everything = client_module.get(
        f"/v1/files/{file_id}/preview", params={"model": "tiny-llama", "n": 1, "train_on_inputs": True}
    ).json()
    assert everything["data"][0]["trained_tokens"] == everything["data"][0]["tokens"]
    assert_error(client_module.get(f"/v1/files/{file_id}/preview", params={"model": "nope"}), 400, "model")
    assert_error(client_module.get(f"/v1/files/{file_id}/preview"), 400, "model")
    assert_error(client_module.get("/v1/files/file-nope/preview", params={"model": "tiny-llama"}), 404)
