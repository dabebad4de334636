"""Examples to token ids and a loss mask, with the base model's own tokenizer and chat
template. The worker trains on exactly this, and the API uses it for the statistics
and pre-flight checks at job creation and for previews, so what a user previews is
what the model learns.

The trained spans of a conversation are found by rendering it through the template up
to each assistant turn (with and without the generation prompt) and mapping those
character spans onto the tokens of the full rendering, which works with any template
that renders a conversation as a prefix of its continuation (all common ones do). Tools
and tool calls go through the template too (`apply_chat_template(..., tools=...)`), so an
assistant turn's span covers its calls as the template writes them; a template that
cannot render what an example holds (tools, calls, tool results, names) is refused
rather than letting the data be dropped.

transformers is imported lazily: the API loads it only for these paths.
"""

from __future__ import annotations

import json
import math
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidRequest
from core.formats import Example, Message
from core.model_cache import materialize
from core.registry import ModelRef

# Used when a tokenizer ships no chat template (README, "Chat template and EOS"): ChatML
# turns, each closed by the tokenizer's own EOS token so the model learns to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_PROBE = [Message("user", "ping", 0), Message("assistant", "pong", 1)]

# What a conversation may need from a chat template beyond roles and text: a probe for
# each puts a marker there, and the template renders it if the marker comes out (a
# template that ignores it, or raises, cannot train on it).
_MARK = "zq7probe"
# Nine alphanumeric characters: the only call ids Mistral's templates accept.
_CALL = {"id": "call00001", "type": "function", "function": {"name": "lookup", "arguments": {"query": _MARK}}}
_TEMPLATE_FEATURES: dict[str, tuple[str, Example]] = {
    "tools": (
        "the tools offered to the model (tools)",
        Example(
            [Message("user", "ping", 0)],
            tools=[{"type": "function", "function": {"name": _MARK, "parameters": {"type": "object"}}}],
        ),
    ),
    "tool_calls": (
        "assistant tool calls (tool_calls)",
        Example([Message("user", "ping", 0), Message("assistant", "", 1, tool_calls=[_CALL])]),
    ),
    "tool_results": (
        "tool results (messages with role tool)",
        Example(
            [
                Message("user", "ping", 0),
                Message("assistant", "", 1, tool_calls=[_CALL]),
                Message("tool", _MARK, 0, tool_call_id="call00001"),
            ]
        ),
    ),
    "names": (
        "message names (name)",
        Example([Message("user", "ping", 0, name=_MARK), Message("assistant", "pong", 1)]),
    ),
}


def _template_features(example: Example) -> set[str]:
    """The features of _TEMPLATE_FEATURES that `example` uses."""
    used = {"tools"} if example.tools else set()
    for message in example.messages:
        used |= {"tool_calls"} if message.tool_calls else set()
        used |= {"tool_results"} if message.role == "tool" else set()
        used |= {"names"} if message.name is not None else set()
    return used


@dataclass
class Encoded:
    input_ids: list[int]
    completion_mask: list[int]
    full_length: int  # before truncation

    @property
    def trained_tokens(self) -> int:
        return sum(self.completion_mask)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


@dataclass
class PreparedTokenizer:
    """A tokenizer with the template and EOS handling a job trains with."""

    tokenizer: Any
    template_source: str  # "model" or "default"
    append_eos: bool  # the template does not close assistant turns with EOS: we add it
    eos_ids: frozenset[int] = field(default_factory=frozenset)
    model: str = "the model"
    # Why the template cannot render a feature of _TEMPLATE_FEATURES (None: it can),
    # probed the first time an example uses it.
    unrenderable: dict[str, str | None] = field(default_factory=dict)

    def notes(self) -> list[str]:
        notes = []
        if self.template_source == "default":
            notes.append("The tokenizer has no chat template; the service's default (ChatML with EOS) is used")
        if self.append_eos:
            eos = self.tokenizer.eos_token
            notes.append(f"The chat template does not end assistant turns with EOS; {eos!r} is appended to each")
        return notes

    # -- rendering -----------------------------------------------------------------------
    def _render(self, example: Example, upto: int | None = None, add_generation_prompt: bool = False) -> str:
        """The example's first `upto` messages (all: None) through the template."""
        return str(
            self.tokenizer.apply_chat_template(
                [m.for_template() for m in example.messages[:upto]],
                tools=example.tools,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def generation_prompt(self, example: Example) -> list[int]:
        """The conversation as the model continues it (inference): rendered as training
        renders it, then the template's generation prompt, tokenized as training
        tokenizes a conversation."""
        self._check_renders(example)
        text = self._render(example, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_renders(self, example: Example) -> None:
        """Refuse an example that uses what the template cannot render."""
        for feature in sorted(_template_features(example)):
            what, probe = _TEMPLATE_FEATURES[feature]
            if feature not in self.unrenderable:
                try:
                    shown = _MARK in self._render(probe)
                    self.unrenderable[feature] = None if shown else "the template leaves it out"
                except Exception as exc:  # whatever a template raises (jinja errors, raise_exception, ...)
                    self.unrenderable[feature] = f"the template fails: {type(exc).__name__}: {exc}"
            if (reason := self.unrenderable[feature]) is not None:
                raise InvalidRequest(
                    f"The chat template of {self.model} cannot render {what}, which the training data has "
                    f"({reason}); fine-tune a model whose chat template supports it, or remove it from the data",
                    param="model",
                    code="chat_template_cannot_render",
                )

    def _assistant_spans(self, example: Example) -> tuple[str, list[tuple[int, int, int]]]:
        """The full rendering and, per assistant turn, (start, end, weight) in characters."""
        from jinja2 import TemplateError  # lazily, as transformers: the API process never renders

        self._check_renders(example)
        try:
            return self._spans(example)
        except TemplateError as exc:  # the template's own refusal (Llama 3.1's: one tool call per turn)
            raise InvalidRequest(
                f"The chat template of {self.model} cannot render an example of the training data: {exc}",
                param="model",
                code="chat_template_cannot_render",
            ) from exc

    def _spans(self, example: Example) -> tuple[str, list[tuple[int, int, int]]]:
        text = self._render(example)
        spans = []
        for i, message in enumerate(example.messages):
            if message.role != "assistant":
                continue
            prompt = self._render(example, i, add_generation_prompt=True)
            upto = self._render(example, i + 1)
            if not (text.startswith(upto) and upto.startswith(prompt)):
                raise InvalidRequest(
                    "The model's chat template does not render a conversation as a prefix of its "
                    "continuation, so assistant turns cannot be located for loss masking",
                    param="model",
                    code="unsupported_chat_template",
                )
            spans.append((len(prompt), len(upto), message.weight))
        return text, spans

    def encode(self, example: Example, max_length: int, train_on_inputs: bool = False) -> Encoded:
        tok = self.tokenizer
        if example.text is not None:  # raw text: every token is trained, EOS closes the document
            ids = tok(example.text, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
            mask = [1] * len(ids)
        else:
            text, spans = self._assistant_spans(example)
            encoding = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            tokens = encoding["input_ids"]
            # A token is trained with the weight of the assistant turn its first character
            # lies in. The offsets of one sequence never go back, so each turn's tokens are
            # one run, found by bisection: no Python step per token (a job encodes millions).
            starts = [start for start, _ in encoding["offset_mapping"]]
            ids, mask, done = [], [], 0
            for first, end, weight in spans:
                lo, hi = bisect_left(starts, first, done), bisect_left(starts, end, done)
                ids += tokens[done:hi]
                mask += [0] * (lo - done) + [weight] * (hi - lo)
                if self.append_eos and weight and hi > lo:  # after the turn's last token
                    ids.append(tok.eos_token_id)
                    mask.append(1)
                done = hi
            ids += tokens[done:]
            mask += [0] * (len(tokens) - done)
        if train_on_inputs:
            mask = [1] * len(ids)
        return Encoded(ids[:max_length], mask[:max_length], len(ids))

    def last_reply(self, example: Example) -> tuple[str, str] | None:
        """The conversation up to its last assistant turn, rendered as training renders it
        with the generation prompt (what a model answers), and that turn's text (the
        reference answer); None for raw text or a conversation without an assistant turn."""
        replies = [i for i, m in enumerate(example.messages) if m.role == "assistant"]
        if example.text is not None or not replies:
            return None
        self._check_renders(example)
        return self._render(example, replies[-1], add_generation_prompt=True), example.messages[replies[-1]].content

    def segments(self, encoded: Encoded) -> list[dict[str, Any]]:
        """Consecutive tokens grouped by whether they are trained, as text."""
        groups: list[tuple[int, list[int]]] = []
        for token, trained in zip(encoded.input_ids, encoded.completion_mask, strict=True):
            if groups and groups[-1][0] == trained:
                groups[-1][1].append(token)
            else:
                groups.append((trained, [token]))
        return [{"text": self.tokenizer.decode(ids), "trained": bool(t), "tokens": len(ids)} for t, ids in groups]


def _eos_ids(tokenizer: Any, model_ref: ModelRef) -> frozenset[int]:
    """EOS as the model sees it: the tokenizer's and the generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = Path(model_ref.source) / "generation_config.json"
    if model_ref.local and generation_config.is_file():
        configured = json.loads(generation_config.read_text()).get("eos_token_id")
        ids |= set(configured) if isinstance(configured, list) else {configured} if configured is not None else set()
    return frozenset(ids)


_TRANSFORMERS_IMPORT = threading.Lock()


def prepare_tokenizer(model_ref: ModelRef) -> PreparedTokenizer:
    """Load the tokenizer, give it a template if it has none, and check that trained
    assistant turns end with a token the model treats as EOS (adding it if not)."""
    model_ref = materialize(model_ref, weights=False)  # a registered model's files, on this host
    with _TRANSFORMERS_IMPORT:  # transformers' lazy modules fail when two threads import them at once
        from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_ref.source, trust_remote_code=False)
    except Exception as exc:
        raise InvalidRequest(
            f"Cannot load the tokenizer of {model_ref.name}: {exc}", param="model", code="model_load_failed"
        ) from exc
    if tokenizer.eos_token_id is None:
        raise InvalidRequest(
            f"The tokenizer of {model_ref.name} defines no EOS token, so a fine-tuned model could not learn to stop",
            param="model",
            code="no_eos_token",
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    source = "model"
    if not tokenizer.chat_template:
        tokenizer.chat_template, source = DEFAULT_CHAT_TEMPLATE, "default"
    prepared = PreparedTokenizer(
        tokenizer, source, append_eos=False, eos_ids=_eos_ids(tokenizer, model_ref), model=model_ref.name
    )
    probe = prepared.encode(Example(_PROBE), max_length=1 << 16)
    trained = [t for t, m in zip(probe.input_ids, probe.completion_mask, strict=True) if m]
    prepared.append_eos = not (set(trained) & prepared.eos_ids)
    return prepared


def statistics(
    prepared: PreparedTokenizer, examples: Iterable[Example], max_length: int, train_on_inputs: bool
) -> dict[str, Any]:
    """Token counts of a dataset under a job's tokenizer and max_seq_length."""
    lengths = array("I")
    truncated = trainable = untrainable = 0
    for example in examples:
        encoded = prepared.encode(example, max_length, train_on_inputs)
        lengths.append(encoded.full_length)
        truncated += encoded.truncated
        trainable += encoded.trained_tokens
        untrainable += encoded.trained_tokens == 0
    return token_counts(lengths, max_length, truncated, trainable, untrainable)


def token_counts(
    lengths: Iterable[int], max_length: int, truncated: int, trainable: int, untrainable: int
) -> dict[str, Any]:
    """A job's token statistics from its examples' lengths (before truncation) and counts."""
    ordered = sorted(lengths)
    n = len(ordered)
    return {
        "examples": n,
        "tokens_total": sum(ordered),
        "tokens_min": ordered[0] if n else 0,
        "tokens_mean": round(sum(ordered) / n, 1) if n else 0,
        "tokens_p95": ordered[min(n - 1, math.ceil(0.95 * n) - 1)] if n else 0,
        "tokens_max": ordered[-1] if n else 0,
        "max_seq_length": max_length,
        "truncated_examples": truncated,
        "trainable_tokens": trainable,
        "examples_without_trainable_tokens": untrainable,
    }
