"""Preference data and DPO jobs through the API: uploads of each shape and their
problems, the method/data checks at job creation, DPO spec errors, and the pre-flight's
statistics of pairs (no training worker: created jobs are cancelled)."""

from __future__ import annotations

import pytest

from tests.helpers import EXAMPLES, assert_error, jsonl, upload, upload_ok, wait_for

TRL_PAIR = {"prompt": "What is 2 plus 2?", "chosen": "2 plus 2 is 4.", "rejected": "No idea."}
DPO = {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}}


@pytest.fixture(scope="module")
def preference_file(client_module) -> str:  # type: ignore[no-untyped-def]
    return upload_ok(client_module, (EXAMPLES / "preference.jsonl").read_bytes(), "preference.jsonl")


def test_openai_and_trl_shapes_upload_as_preference(client_module) -> None:  # type: ignore[no-untyped-def]
    openai = upload(client_module, (EXAMPLES / "preference.jsonl").read_bytes(), "preference.jsonl").json()
    assert (openai["status"], openai["format"], openai["examples"]) == ("processed", "preference", 24)
    trl = upload(client_module, jsonl(TRL_PAIR, TRL_PAIR), "pairs.jsonl", data_format="preference").json()
    assert (trl["status"], trl["format"], trl["examples"]) == ("processed", "preference", 2)


def test_bad_pairs_are_refused_with_line_and_field(client_module) -> None:  # type: ignore[no-untyped-def]
    bad = dict(TRL_PAIR, rejected=TRL_PAIR["chosen"])
    no_reply = {
        "input": {"messages": [{"role": "user", "content": "hi"}]},
        "preferred_output": [],
        "non_preferred_output": [{"role": "assistant", "content": "x"}],
    }
    response = upload(client_module, jsonl(TRL_PAIR, bad, no_reply), "pairs.jsonl")
    error = assert_error(response, 400)
    problems = [(p["line"], p["field"]) for p in error["details"]]
    assert problems == [(2, "chosen"), (3, "preferred_output")], error


def test_a_dpo_job_needs_preference_data_and_a_supervised_job_refuses_it(  # type: ignore[no-untyped-def]
    client_module, chat_file, preference_file
) -> None:
    dpo_on_chat = client_module.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": chat_file, "method": DPO}
    )
    assert (
        "method.type 'dpo' trains on preference pairs"
        in assert_error(dpo_on_chat, 400, "training_file", "method_data_mismatch")["message"]
    )
    sft_on_pairs = client_module.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": preference_file}
    )
    assert (
        "holds preference pairs" in assert_error(sft_on_pairs, 400, "training_file", "method_data_mismatch")["message"]
    )
    mixed = client_module.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny-llama", "training_file": preference_file, "validation_file": chat_file, "method": DPO},
    )
    assert_error(mixed, 400, "validation_file", "method_data_mismatch")


@pytest.mark.parametrize(
    ("method", "param", "words"),
    [
        ({"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}, "method.dpo.hyperparameters.beta", "greater than"),
        ({"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}, "method.dpo.hyperparameters.gamma", "unknown"),
        ({"type": "dpo", "supervised": {}}, "method", "method.supervised is given but method.type is 'dpo'"),
        ({"type": "orpo"}, "method.type", "'supervised' or 'dpo'"),
    ],
)
def test_dpo_spec_errors_name_the_field(client_module, preference_file, method, param, words) -> None:  # type: ignore[no-untyped-def]
    response = client_module.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": preference_file, "method": method}
    )
    assert words in assert_error(response, 400, param)["message"]


def test_dpo_job_pre_flight_counts_pairs_and_resolves_beta(client_module, preference_file) -> None:  # type: ignore[no-untyped-def]
    created = client_module.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": preference_file,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"batch_size": 4}}},
            "qlora": {"training": {"max_seq_length": 56}},
        },
    )
    assert created.status_code == 200, created.text
    job = wait_for(client_module, created.json()["id"], {"queued", "failed"}, timeout=120)
    client_module.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
    assert job["status"] == "queued", job["error"]
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.1
    assert job["hyperparameters"] == {"n_epochs": 10, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert job["qlora"]["data"] == {
        "format": "preference",
        "train_on_inputs": False,
        "packing": False,
        "validation_split": None,
        "tasks": None,
    }
    stats = job["statistics"]
    # The sums (a system prompt) and some capitals (a long rejected reply) pass 56 tokens.
    assert stats["examples"] == 24 and 8 <= stats["truncated_examples"] < 24
    pref = stats["preference"]
    assert 0 < pref["prompt_tokens_mean"] <= pref["prompt_tokens_max"] < 56
    assert pref["chosen_tokens_max"] > 0 and pref["rejected_tokens_max"] > 0
    assert 0 < stats["trainable_tokens"] < 24 * (pref["chosen_tokens_max"] + pref["rejected_tokens_max"])


def test_tools_the_models_template_ignores_fail_the_pre_flight(client_module, no_tools_model: str) -> None:  # type: ignore[no-untyped-def]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    row = {
        "input": {"messages": [{"role": "user", "content": "2+2?"}], "tools": tools},
        "preferred_output": [{"role": "assistant", "content": "4"}],
        "non_preferred_output": [{"role": "assistant", "content": "5"}],
    }
    file_id = upload_ok(client_module, jsonl(row, row))
    created = client_module.post(
        "/v1/fine_tuning/jobs", json={"model": no_tools_model, "training_file": file_id, "method": {"type": "dpo"}}
    ).json()
    job = wait_for(client_module, created["id"], {"queued", "failed"}, timeout=120)
    assert job["status"] == "failed"
    assert (job["error"]["code"], job["error"]["param"]) == ("tools_not_rendered", "training_file")


def test_a_preview_of_pairs_shows_the_prompt_and_its_preferred_reply(client_module, preference_file) -> None:  # type: ignore[no-untyped-def]
    preview = client_module.get(f"/v1/files/{preference_file}/preview", params={"model": "tiny-llama", "n": 1}).json()
    assert preview["format"] == "preference"
    marked = preview["data"][0]["marked"]
    assert "What is the capital of Iran?" in marked and marked.endswith("[[The capital of Iran is Tehran.<|eot_id|>]]")
    assert "Paris" not in marked
