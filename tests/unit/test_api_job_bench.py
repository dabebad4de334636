"""bench/api_job.py's own arithmetic: the chats it generates have the lengths asked for,
in the bench models' tokens, and a job's run splits into the parts it reports."""

from __future__ import annotations

import statistics
from typing import Any

from bench.api_job import WORDS, Observed, chat_examples, parts, text_tokens, training_rate
from bench.train_throughput import lognormal_lengths
from worker.tiny_model import build_tokenizer


def test_chats_have_the_asked_lengths_in_tokens() -> None:
    tokenizer = build_tokenizer()

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lengths = lognormal_lengths(400)
    examples = chat_examples(lengths, count)
    measured = [text_tokens(e, count) for e in examples]
    longest_word = max(count(" " + w) for w in WORDS)
    for asked, got in zip(lengths, measured, strict=True):
        # Each turn ends with the word that reaches its share; the first word lacks its space.
        assert asked - 2 <= got <= asked + 2 * longest_word + 2
    assert 280 <= statistics.median(measured) <= 330
    assert all(e["messages"][0]["role"] == "user" and e["messages"][1]["role"] == "assistant" for e in examples)


def metric(step: int, tokens_seen: int, rate: float) -> dict[str, Any]:
    return {"split": "train", "step": step, "tokens_seen": tokens_seen, "tokens_per_second": rate}


def test_a_run_splits_into_its_parts() -> None:
    observed = Observed(submitted=1000.0)
    for now, status, progress in (
        (1000.1, "validating_files", None),
        (1001.0, "queued", None),
        (1003.0, "running", None),
        (1010.0, "running", {"step": 0, "seconds_per_step": None, "at": 1009.5}),
        (1012.0, "running", {"step": 1, "seconds_per_step": 2.0, "at": 1011.5}),
        (1012.2, "running", {"step": 1, "seconds_per_step": 2.0, "at": 1011.5}),
        (1030.0, "running", {"step": 9, "seconds_per_step": 2.5, "at": 1029.9}),
        (1041.0, "succeeded", {"step": 10, "seconds_per_step": 2.5, "at": 1034.5}),
    ):
        observed.saw({"status": status, "progress": progress}, now)
    events: list[dict[str, Any]] = [
        {"message": "Loaded 60 training examples", "data": None},
        {"message": "Loaded llama-8b in 4 bits", "data": {"load_seconds": 4.2, "base_cache": "hit"}},
        {"message": "First training step done 6.1 s after the job process started", "data": {"process_seconds": 6.1}},
    ]
    # 1000 tokens at step 1 (warm-up, left out), then 3000 in 2 s and 2000 in 0.5 s.
    metrics = [metric(1, 1000, 10.0), metric(2, 4000, 1500.0), metric(3, 6000, 4000.0)]
    got = parts(observed, events, metrics)
    assert got == {
        "total_s": 41.0,
        "preflight_s": 1.0,
        "start_s": 3.0,
        "load_s": 4.2,
        "base_cache": "hit",
        "loaded_process_s": None,
        "first_step_after_pickup_s": 8.5,
        "first_step_process_s": 6.1,
        "train_s": 23.0,
        "steps": 10,
        "real_tokens_per_s": 2000.0,
        "publish_s": 6.5,
    }
    assert len(observed.progress) == 4  # the same progress polled twice is kept once


def test_a_first_step_seen_late_is_taken_back_and_old_workers_report_less() -> None:
    observed = Observed(submitted=0.0)
    observed.saw({"status": "running", "progress": None}, 1.0)
    observed.saw({"status": "succeeded", "progress": {"step": 5, "seconds_per_step": 2.0, "at": 20.0}}, 21.0)
    got = parts(observed, [{"message": "Loaded m", "data": {"load_seconds": 3.0}}], [])
    assert got["first_step_after_pickup_s"] == 11.0  # 20 - 4 steps of 2 s, less the pickup at 1
    assert (got["base_cache"], got["first_step_process_s"], got["real_tokens_per_s"]) == (None, None, None)
    assert training_rate([metric(1, 100, 5.0)]) is None
