"""Exact loss masks for every format, with the tiny model's real tokenizer and chat
template: the trained tokens are the assistant's reply and its EOS, nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.formats import Example, Message
from core.registry import ModelRef
from core.tokenization import PreparedTokenizer, prepare_tokenizer
from tests.unit.test_datasets import EXAMPLES, as_jsonl

EOT = "<|eot_id|>"


@pytest.fixture(scope="module")
def prepared(tiny_model: Path) -> PreparedTokenizer:
    return prepare_tokenizer(ModelRef("tiny-llama", str(tiny_model), True))


def trained_text(prepared: PreparedTokenizer, example: Example, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    encoded = prepared.encode(example, max_length=4096, **kwargs)
    return [s["text"] for s in prepared.segments(encoded) if s["trained"]]


def example_of(fmt: str) -> Example:
    import io

    from core.datasets import iter_examples

    return next(iter_examples(io.BytesIO(as_jsonl([EXAMPLES[fmt]])), "jsonl", fmt))


@pytest.mark.parametrize(
    ("fmt", "trained"),
    [
        ("chat", ["hello" + EOT]),
        ("prompt_completion", ["4" + EOT]),
        ("instruction", ["chat" + EOT]),
        ("qa", ["تهران" + EOT]),
        ("text", ["Once upon a time 🚀" + EOT]),
    ],
)
def test_only_the_completion_is_trained_in_every_format(prepared: PreparedTokenizer, fmt: str, trained) -> None:  # type: ignore[no-untyped-def]
    assert prepared.template_source == "model" and not prepared.append_eos
    example = example_of(fmt)
    assert trained_text(prepared, example) == trained
    encoded = prepared.encode(example, 4096)
    # The mask is exact at the token level: the trained tokens are the reply's own tokens.
    reply_ids = prepared.tokenizer(trained[0].removesuffix(EOT), add_special_tokens=False)["input_ids"]
    trained_ids = [t for t, m in zip(encoded.input_ids, encoded.completion_mask, strict=True) if m]
    assert trained_ids == reply_ids + [prepared.tokenizer.convert_tokens_to_ids(EOT)]
    if fmt != "text":
        assert encoded.completion_mask[: len(encoded.input_ids) - len(trained_ids)] == [0] * (
            len(encoded.input_ids) - len(trained_ids)
        )


def test_weights_multi_turn_and_train_on_inputs(prepared: PreparedTokenizer) -> None:
    example = Example(
        [
            Message("system", "Be brief.", 0),
            Message("user", "a", 0),
            Message("assistant", "b", 0),
            Message("user", "c", 0),
            Message("assistant", "d", 1),
        ]
    )
    assert trained_text(prepared, example) == ["d" + EOT]
    everything = prepared.encode(example, 4096, train_on_inputs=True)
    assert set(everything.completion_mask) == {1}


def test_truncation_keeps_the_start_and_counts(prepared: PreparedTokenizer) -> None:
    example = Example([Message("user", "word " * 200, 0), Message("assistant", "yes", 1)])
    encoded = prepared.encode(example, max_length=32)
    assert len(encoded.input_ids) == 32 and encoded.truncated and encoded.trained_tokens == 0


def test_a_tokenizer_without_template_gets_the_default_and_eos(tiny_model: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    prepared = prepare_tokenizer(ModelRef("bare", str(bare), True))
    assert prepared.template_source == "default" and not prepared.append_eos
    assert trained_text(prepared, example_of("chat")) == ["hello" + EOT + "\n"]
    assert "default" in prepared.notes()[0]


def test_a_template_without_eos_gets_eos_appended(tiny_model: Path, tmp_path: Path) -> None:
    no_eos = tmp_path / "no-eos"
    shutil.copytree(tiny_model, no_eos)
    template = (no_eos / "chat_template.jinja").read_text()
    (no_eos / "chat_template.jinja").write_text(template.replace("+ '<|eot_id|>'", "+ '\\n'"))
    prepared = prepare_tokenizer(ModelRef("no-eos", str(no_eos), True))
    assert prepared.append_eos and "appended" in prepared.notes()[0]
    assert trained_text(prepared, example_of("chat")) == ["hello\n" + EOT]
