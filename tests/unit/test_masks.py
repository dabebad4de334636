"""Exact loss masks for every format, with the tiny model's real tokenizer and chat
template: the trained tokens are the assistant's reply and its EOS, nothing else."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from core.errors import InvalidRequest
from core.formats import Example, Message
from core.registry import ModelRef
from core.tokenization import PreparedTokenizer, prepare_tokenizer
from tests.helpers import without_chat_template
from tests.unit.test_datasets import EXAMPLES, as_jsonl
from tests.unit.test_tool_formats import SHARE_CALLS, TOOL_CHAT

EOT = "<|eot_id|>"


@pytest.fixture(scope="module")
def prepared(tiny_model: Path) -> PreparedTokenizer:
    return prepare_tokenizer(ModelRef("tiny-llama", str(tiny_model), True))


def trained_text(prepared: PreparedTokenizer, example: Example, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
    encoded = prepared.encode(example, max_length=4096, **kwargs)
    return [s["text"] for s in prepared.segments(encoded) if s["trained"]]


def example_of(fmt: str, row: dict | None = None) -> Example:  # type: ignore[type-arg]
    import io

    from core.datasets import iter_examples

    return next(iter_examples(io.BytesIO(as_jsonl([row or EXAMPLES[fmt]])), "jsonl", fmt))


def bare_model(tiny_model: Path, tmp_path: Path) -> PreparedTokenizer:
    """The tiny model without its chat template."""
    return prepare_tokenizer(ModelRef("bare", str(without_chat_template(tiny_model, tmp_path / "bare")), True))


@pytest.mark.parametrize(
    ("fmt", "trained"),
    [
        ("chat", ["hello" + EOT]),
        ("sharegpt", ["hello" + EOT]),
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
    prepared = bare_model(tiny_model, tmp_path)
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


CALL_TEXT = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'


@pytest.mark.parametrize(("fmt", "row"), [("chat", TOOL_CHAT), ("sharegpt", SHARE_CALLS)])
def test_tool_calls_are_trained_and_tool_results_are_not(prepared: PreparedTokenizer, fmt: str, row) -> None:  # type: ignore[no-untyped-def]
    example = example_of(fmt, row)
    # The call as the template writes it (Llama 3.1's JSON) and the answer, each with EOS.
    assert trained_text(prepared, example) == [CALL_TEXT + EOT, "It is snowing, -3 degrees." + EOT]
    encoded = prepared.encode(example, 4096)
    rendered = prepared.tokenizer.decode(encoded.input_ids)
    assert '"name": "get_weather"' in rendered.split("<|start_header_id|>user")[0]  # the tools, before the user turn
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n-3 C, snow" + EOT in rendered  # the result: an input
    assert set(prepared.encode(example, 4096, train_on_inputs=True).completion_mask) == {1}


def test_a_tool_call_with_weight_0_is_context(prepared: PreparedTokenizer) -> None:
    row = copy.deepcopy(TOOL_CHAT)
    row["messages"][1]["weight"] = 0
    assert trained_text(prepared, example_of("chat", row)) == ["It is snowing, -3 degrees." + EOT]


def test_a_template_that_cannot_render_tools_refuses_the_example(tiny_model: Path, tmp_path: Path) -> None:
    prepared = bare_model(tiny_model, tmp_path)
    with pytest.raises(InvalidRequest) as refused:
        prepared.encode(example_of("chat", TOOL_CHAT), 4096)
    assert (refused.value.code, refused.value.param) == ("chat_template_cannot_render", "model")
    assert "The chat template of bare cannot render assistant tool calls (tool_calls)" in refused.value.message
    no_tools = {"messages": TOOL_CHAT["messages"]}  # the calls alone are refused too
    with pytest.raises(InvalidRequest, match="tool calls"):
        prepared.encode(example_of("chat", no_tools), 4096)
    assert trained_text(prepared, example_of("chat")) == ["hello" + EOT + "\n"]  # plain chat still trains


def test_names_are_refused_where_the_template_drops_them(prepared: PreparedTokenizer) -> None:
    named = {"messages": [{"role": "user", "content": "hi", "name": "ana"}, {"role": "assistant", "content": "hello"}]}
    with pytest.raises(InvalidRequest, match=r"cannot render message names \(name\).*leaves it out"):
        prepared.encode(example_of("chat", named), 4096)


def test_a_template_that_refuses_an_example_says_why(tiny_model: Path, tmp_path: Path) -> None:
    one_call = tmp_path / "one-call"
    shutil.copytree(tiny_model, one_call)
    template = (one_call / "chat_template.jinja").read_text()
    refusal = (
        "{% if message['tool_calls'] and message['tool_calls'] | length > 1 %}"
        "{{ raise_exception('one call at a time') }}{% endif %}"
    )
    (one_call / "chat_template.jinja").write_text(template.replace("{% set calls %}", refusal + "{% set calls %}", 1))
    prepared = prepare_tokenizer(ModelRef("one-call", str(one_call), True))
    assert trained_text(prepared, example_of("chat", TOOL_CHAT))  # one call: rendered
    row = copy.deepcopy(TOOL_CHAT)
    call = row["messages"][1]["tool_calls"][0]
    row["messages"][1]["tool_calls"].append(call | {"id": "call_2"})
    row["messages"].insert(3, {"role": "tool", "tool_call_id": "call_2", "content": "-3 C"})
    with pytest.raises(InvalidRequest, match="cannot render an example of the training data: one call at a time") as no:
        prepared.encode(example_of("chat", row), 4096)
    assert (no.value.code, no.value.param) == ("chat_template_cannot_render", "model")
