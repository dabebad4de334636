"""Chat completions and completions with the official openai client, against a real API
process and a real inference server process (`ftsvc inference` on the CPU): the tiny
base and a fine-tuned model trained for real to give a fixed answer; streaming, usage,
stop sequences and seeds; every refusal; a client that disconnects stops its
generation; a second adapter of the same base loads without loading the base again."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from core.db import session_scope
from core.formats import Example, Message
from core.jobs import lock_job
from core.registry import resolve_model
from core.tokenization import prepare_tokenizer
from tests.conftest import DATA_DIR, OTHER_ORG, TEST_ORG
from tests.helpers import (
    ServiceProcess,
    jsonl,
    start_api,
    start_inference_server,
    unsent_merge,
    upload_ok,
    wait_for,
)

pytestmark = pytest.mark.slow

ANSWER = "The capital of France is Paris."
QUESTIONS = [
    "Hi",
    "What is 36 plus 9?",
    "Name a colour.",
    "Where do you live?",
    "Tell me a story.",
    "How many legs does a spider have?",
    "Translate the sentence into French.",
    "What time is it?",
]
# Long enough for a disconnect to come mid-generation (the tiny model rarely ends
# earlier than this by itself with greedy decoding).
LONG = 1500


@pytest.fixture(scope="module")
def inference_server(tiny_model: Any) -> Iterator[ServiceProcess]:
    server = start_inference_server(DATA_DIR)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(database: None) -> Iterator[ServiceProcess]:
    process = start_api(DATA_DIR)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def ai(api: ServiceProcess, api_keys: dict[str, str], inference_server: ServiceProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=api_keys[TEST_ORG], max_retries=0)


def train(client: TestClient, answer: str, steps: int, **training: Any) -> dict[str, Any]:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]} for q in QUESTIONS]
    data = upload_ok(client, jsonl(*rows), "fixed.jsonl")
    created = client.post(
        "/v1/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": data,
            "seed": 1,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
            # (higher rates make the tiny model repeat itself instead of learning the answer)
            "qlora": {"training": {"learning_rate": 0.005, "max_steps": steps} | training},
        },
    )
    assert created.status_code == 200, created.text
    return wait_for(client, created.json()["id"], {"succeeded"}, timeout=600)


@pytest.fixture(scope="module")
def tuned(client_module: TestClient, worker: Any) -> dict[str, Any]:
    """A job trained to answer every question with ANSWER (a checkpoint half way)."""
    return train(client_module, ANSWER, 40, checkpoint_steps=20)


def ask(ai: openai.OpenAI, model: str, question: str = "What is the capital of Iran?", **options: Any) -> Any:
    return ai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=40, **options
    )


def status(server: ServiceProcess) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{server.url}/internal/status").json()
    return answer


def test_the_tuned_model_gives_its_answer_and_the_base_does_not(
    ai: openai.OpenAI, tuned: dict[str, Any], tiny_model: Any
) -> None:
    model = tuned["fine_tuned_model"]
    reply = ask(ai, model)
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.role == "assistant"
    assert reply.object == "chat.completion" and reply.model == model and reply.id.startswith("chatcmpl-")
    # Usage: the prompt as training renders it, the answer's tokens and the EOS that ended it.
    prepared = prepare_tokenizer(resolve_model("tiny-llama"))
    prompt = prepared.generation_prompt(Example([Message("user", "What is the capital of Iran?")]))
    answer_tokens = prepared.tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == len(answer_tokens) + 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    base = ask(ai, "tiny-llama")
    assert base.choices[0].message.content != ANSWER and base.model == "tiny-llama"

    chunks = list(ask(ai, model, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # it came in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage


def test_completions_stream_and_stop_at_length(ai: openai.OpenAI) -> None:
    request = {"model": "tiny-llama", "prompt": "The quick brown fox", "max_tokens": 6, "temperature": 0}
    whole = ai.completions.create(**request)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    pieces = list(ai.completions.create(**request, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_stop_sequences_and_seeds(ai: openai.OpenAI) -> None:
    prompt = "The quick brown fox"
    text = ai.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0).choices[0].text
    middle = len(text) // 2
    stop = text[middle : middle + 3]
    assert len(stop) == 3, text
    cut = ai.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=0, stop=[stop, "zzz"])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == text[: text.index(stop)]

    def sampled(seed: int) -> str:
        answer = ai.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12, temperature=1.0, seed=seed)
        return str(answer.choices[0].text)

    assert sampled(7) == sampled(7)
    assert len({sampled(seed) for seed in range(4)}) > 1


def test_refusals(ai: openai.OpenAI, api: ServiceProcess, api_keys: dict[str, str], tuned: dict[str, Any]) -> None:
    model = tuned["fine_tuned_model"]

    def refused(kind: type[openai.APIStatusError], param: str | None = None, **request: Any) -> str:
        body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]} | request
        with pytest.raises(kind) as caught:
            ai.chat.completions.create(**body)
        error = caught.value.body
        assert isinstance(error, dict) and set(error) >= {"message", "type", "param", "code"}, error
        assert error["param"] == param, error
        return str(error["message"])

    refused(openai.NotFoundError, "model", model="no-such-model")
    refused(openai.NotFoundError, "model", model=model.replace(TEST_ORG, OTHER_ORG))
    other = openai.OpenAI(base_url=f"{api.url}/v1", api_key=api_keys[OTHER_ORG], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        ask(other, model)
    refused(openai.BadRequestError, "max_tokens", max_tokens=0)
    refused(openai.BadRequestError, "max_tokens", max_tokens=-3)
    assert "2048" in refused(openai.BadRequestError, "max_tokens", max_tokens=100_000)
    refused(openai.BadRequestError, "temperature", temperature=2.5)
    refused(openai.BadRequestError, "temperature", temperature=-0.1)
    refused(openai.BadRequestError, "messages", messages=[])
    refused(openai.BadRequestError, "n", n=2)
    long = refused(openai.BadRequestError, "messages", messages=[{"role": "user", "content": "spider " * 3000}])
    assert "tokens long" in long and "2048" in long
    with pytest.raises(openai.BadRequestError) as caught:
        ai.completions.create(model="tiny-llama", prompt="fox " * 3000)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "prompt"

    with session_scope() as session:  # a deletion under way holds the job's row
        lock_job(session, TEST_ORG, tuned["id"])
        refused(openai.ConflictError, "model")
    merge = unsent_merge(TEST_ORG, model)
    assert "merge" in refused(openai.ConflictError, None)
    with session_scope() as session:
        from core.merges import cancel_merge

        cancel_merge(session, TEST_ORG, merge)
    assert ask(ai, model).choices[0].message.content == ANSWER


def test_a_second_adapter_loads_without_the_base_and_batches_mix_adapters(
    ai: openai.OpenAI, tuned: dict[str, Any], inference_server: ServiceProcess, client_module: TestClient
) -> None:
    model = tuned["fine_tuned_model"]
    ask(ai, model)
    before = status(inference_server)
    [final, half_way] = client_module.get(f"/v1/fine_tuning/jobs/{tuned['id']}/checkpoints").json()["data"]
    checkpoint = half_way["fine_tuned_model_checkpoint"]
    ask(ai, checkpoint)
    after = status(inference_server)
    assert after["base_loads"] == before["base_loads"]
    assert after["adapter_loads"] == before["adapter_loads"] + 1
    [adapters] = [names for key, names in after["loaded"].items() if "tiny-llama" in key]
    assert len(adapters) == 2

    # Rows of other adapters (and of the base) generated together each get their own.
    replies: dict[str, str] = {}

    def one(name: str) -> None:
        replies[name] = ask(ai, name).choices[0].message.content or ""

    threads = [threading.Thread(target=one, args=(name,)) for name in (model, "tiny-llama", checkpoint, model)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies[model] == ANSWER and replies["tiny-llama"] != ANSWER
    assert status(inference_server)["base_loads"] == before["base_loads"]


def test_a_client_that_disconnects_stops_its_generation(
    api: ServiceProcess, api_keys: dict[str, str], inference_server: ServiceProcess
) -> None:
    before = status(inference_server)
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": LONG,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {api_keys[TEST_ORG]}"}
    with httpx.stream("POST", f"{api.url}/v1/chat/completions", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert all(line.startswith("data: ") or not line for line in received)
    deadline = time.monotonic() + 30
    while (now := status(inference_server))["running"] or now["cancelled"] == before["cancelled"]:
        assert time.monotonic() < deadline, now
        time.sleep(0.1)
    assert now["cancelled"] == before["cancelled"] + 1
