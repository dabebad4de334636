"""Preference pairs to token ids, with the base model's chat template, as TRL's DPO trainer
tokenizes them: the prompt is the input conversation rendered with the generation prompt,
each reply the tokens the prompt followed by it adds. The worker trains on exactly this
and the pre-flight counts it, so the job's statistics are what training sees.

A sequence (prompt + reply) longer than max_seq_length loses its end (TRL's collator
keeps the start); a pair whose prompt alone fills max_seq_length has nothing left to
train on and is left out (as TRL leaves it out)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from core.datasets import DataFile, read_rows
from core.errors import InvalidRequest
from core.formats import REGISTRY
from core.preference_format import PreferencePair, to_pair
from core.tokenization import PreparedTokenizer, token_counts


@dataclass(frozen=True)
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    def kept(self, ids: list[int], max_length: int) -> int:
        """Reply tokens left in the loss once prompt + reply is cut to max_length."""
        return max(0, min(len(ids), max_length - len(self.prompt_ids)))

    def trains(self, max_length: int) -> bool:
        return len(self.prompt_ids) < max_length


def pairs_of(data: DataFile) -> Iterator[PreferencePair]:
    """The pairs of a validated preference file in storage, in order."""
    with data.open() as stream:
        for raw in read_rows(stream, data.file_type, REGISTRY["preference"]):
            yield to_pair(raw.data)


def _ids(prepared: PreparedTokenizer, messages: list[dict[str, str]], tools: Any, generation: bool) -> list[int]:
    rendered = prepared.tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=True, return_dict=True, add_generation_prompt=generation
    )
    return list(rendered["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_pair(prepared: PreparedTokenizer, pair: PreferencePair) -> EncodedPair:
    """The pair's token ids. A reply starts where the rendered prompt and prompt + reply
    part (templates may render the generation prompt differently from a finished
    turn); with a template that does not end assistant turns with EOS, EOS is appended
    to each reply, as for supervised training."""
    prompt = _ids(prepared, pair.prompt, pair.tools, True)
    chosen = _ids(prepared, pair.prompt + pair.chosen, pair.tools, False)
    rejected = _ids(prepared, pair.prompt + pair.rejected, pair.tools, False)
    start = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    replies = [chosen[start:], rejected[start:]]
    if prepared.append_eos:
        replies = [ids + [prepared.tokenizer.eos_token_id] for ids in replies]
    return EncodedPair(prompt[:start], *replies)


def check_tools_render(prepared: PreparedTokenizer, pairs: Iterable[PreferencePair]) -> None:
    """Refuse tools the chat template would silently leave out of the prompt."""
    pair = next((p for p in pairs if p.tools), None)
    if pair is not None and _ids(prepared, pair.prompt, pair.tools, True) == _ids(prepared, pair.prompt, None, True):
        raise InvalidRequest(
            "The training file's prompts give tools, but the model's chat template does not render them, so "
            "the model would never see them; use a model whose template renders tools, or leave tools out",
            param="training_file",
            code="tools_not_rendered",
        )


def preference_statistics(
    prepared: PreparedTokenizer, pairs: Iterable[PreferencePair], max_length: int
) -> dict[str, Any]:
    """Token counts of preference data under a job's tokenizer and max_seq_length, in the
    supervised statistics' keys (an example is a pair: its length the longer of prompt +
    chosen and prompt + rejected, its trained tokens both replies' tokens kept) and, under
    `preference`, the lengths of prompts, chosen and rejected replies."""
    lengths: list[int] = []
    parts: dict[str, list[int]] = {"prompt_tokens": [], "chosen_tokens": [], "rejected_tokens": []}
    truncated = trainable = untrainable = 0
    for pair in pairs:
        encoded = encode_pair(prepared, pair)
        prompt = len(encoded.prompt_ids)
        lengths.append(prompt + max(len(encoded.chosen_ids), len(encoded.rejected_ids)))
        for name, ids in zip(parts, (encoded.prompt_ids, encoded.chosen_ids, encoded.rejected_ids), strict=True):
            parts[name].append(len(ids))
        truncated += lengths[-1] > max_length
        if encoded.trains(max_length):
            trainable += encoded.kept(encoded.chosen_ids, max_length) + encoded.kept(encoded.rejected_ids, max_length)
        else:
            untrainable += 1
    preference: dict[str, Any] = {}
    for name, values in parts.items():
        mean = round(sum(values) / len(values), 1) if values else 0
        preference |= {f"{name}_mean": mean, f"{name}_max": max(values, default=0)}
    return token_counts(lengths, max_length, truncated, trainable, untrainable) | {"preference": preference}
