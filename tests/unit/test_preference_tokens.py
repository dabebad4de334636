"""Preference pairs to token ids with the tiny model's chat template, as TRL's DPO
trainer splits them, and the pre-flight's statistics of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InvalidRequest
from core.preference_format import PreferencePair
from core.preferences import check_tools_render, encode_pair, preference_statistics
from core.registry import ModelRef
from core.tokenization import PreparedTokenizer, prepare_tokenizer
from tests.helpers import without_chat_template

PAIR = PreferencePair(
    [{"role": "user", "content": "What is 2 plus 2?"}],
    [{"role": "assistant", "content": "2 plus 2 is 4."}],
    [{"role": "assistant", "content": "No idea."}],
)


@pytest.fixture(scope="module")
def prepared(tiny_model: Path) -> PreparedTokenizer:
    return prepare_tokenizer(ModelRef("tiny-llama", str(tiny_model), True))


def test_the_prompt_ends_with_the_generation_prompt_and_each_reply_is_its_continuation(
    prepared: PreparedTokenizer,
) -> None:
    tok = prepared.tokenizer
    encoded = encode_pair(prepared, PAIR)
    prompt = tok.decode(encoded.prompt_ids)
    assert prompt.startswith(tok.bos_token) and prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert tok.decode(encoded.chosen_ids) == "2 plus 2 is 4.<|eot_id|>"  # the template's own EOS closes it
    assert tok.decode(encoded.rejected_ids) == "No idea.<|eot_id|>"
    full = tok.apply_chat_template(PAIR.prompt + PAIR.chosen, tokenize=True, return_dict=True)["input_ids"]
    assert encoded.prompt_ids + encoded.chosen_ids == list(full)


def test_statistics_count_pairs_replies_and_truncation(prepared: PreparedTokenizer) -> None:
    encoded = encode_pair(prepared, PAIR)
    prompt, chosen, rejected = (len(encoded.prompt_ids), len(encoded.chosen_ids), len(encoded.rejected_ids))
    roomy = preference_statistics(prepared, [PAIR, PAIR], 1024)
    assert roomy["examples"] == 2 and roomy["tokens_max"] == prompt + chosen
    assert roomy["trainable_tokens"] == 2 * (chosen + rejected) and roomy["truncated_examples"] == 0
    assert roomy["preference"] == {
        "prompt_tokens_mean": prompt,
        "prompt_tokens_max": prompt,
        "chosen_tokens_mean": chosen,
        "chosen_tokens_max": chosen,
        "rejected_tokens_mean": rejected,
        "rejected_tokens_max": rejected,
    }
    # Cut two tokens into the chosen reply: the rejected one (shorter) still fits.
    tight = preference_statistics(prepared, [PAIR], prompt + chosen - 2)
    assert tight["truncated_examples"] == 1 and tight["trainable_tokens"] == chosen - 2 + rejected
    # A prompt that fills max_seq_length leaves the pair nothing to train on.
    none = preference_statistics(prepared, [PAIR], prompt)
    assert none["trainable_tokens"] == 0 and none["examples_without_trainable_tokens"] == 1


def test_tools_the_template_cannot_render_are_refused(tiny_model: Path, tmp_path: Path) -> None:
    bare = prepare_tokenizer(ModelRef("bare", str(without_chat_template(tiny_model, tmp_path / "bare")), True))
    tools = [{"type": "function", "function": {"name": "add", "description": "adds", "parameters": {}}}]
    check_tools_render(bare, [PAIR])  # no tools: nothing to check
    with pytest.raises(InvalidRequest) as refused:
        check_tools_render(bare, [PAIR, PreferencePair(PAIR.prompt, PAIR.chosen, PAIR.rejected, tools)])
    assert (refused.value.code, refused.value.param) == ("tools_not_rendered", "training_file")
