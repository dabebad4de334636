"""A fine-tuned model and its base model, run over the same examples (what every
evaluation runs, worker.evaluation_runner): the base loaded as the job trained on it
(worker.training.recipe.load_base_model: in 4 bits as its spec quantizes it) with the
job's adapter on it; the base model's figures are taken with the adapter disabled
(peft's `disable_adapter`), so one copy of the weights serves both.

Per example and model:
- the loss: cross-entropy on the tokens training computes its loss on (core.tokenization
  encodes the example exactly as for training: the assistant turns of weight 1, or every
  token when the job trained on inputs), summed, with the count of those tokens;
- the answer: greedy decoding from the conversation up to its last assistant turn,
  rendered by the chat template with the generation prompt, as training rendered it,
  until an EOS token of the model or `max_tokens`; then exact match and token F1 against
  that turn's text (core.answer_metrics).

Examples run one at a time: no padding, so each figure is exactly the example's own."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from peft import PeftModel
from torch.nn import functional

from core.answer_metrics import exact_match, token_f1
from core.formats import Example
from core.tokenization import PreparedTokenizer

MODELS = ("base", "fine_tuned")


@dataclass
class Scored:
    """One model's result on one example."""

    answer: str
    exact_match: float
    f1: float
    loss_sum: float  # over the example's trained tokens
    tokens: int


@dataclass
class ExampleResult:
    prompt: str
    reference: str
    by_model: dict[str, Scored]


@dataclass
class Totals:
    """One model's figures over the examples so far."""

    exact_match: float = 0.0
    f1: float = 0.0
    loss_sum: float = 0.0
    tokens: int = 0
    n: int = 0

    def add(self, scored: Scored) -> None:
        self.exact_match += scored.exact_match
        self.f1 += scored.f1
        self.loss_sum += scored.loss_sum
        self.tokens += scored.tokens
        self.n += 1

    def scores(self) -> dict[str, Any]:
        """As the evaluation reports them (ModelScores)."""
        loss = self.loss_sum / self.tokens if self.tokens else None
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if loss is not None else None,
            "exact_match": self.exact_match / self.n if self.n else 0.0,
            "f1": self.f1 / self.n if self.n else 0.0,
            "n": self.n,
        }


@dataclass
class Evaluator:
    """`model`: the base model with the adapter; `max_length` and `train_on_inputs`: the
    job's, as training encoded its examples."""

    model: PeftModel
    prepared: PreparedTokenizer
    max_length: int
    train_on_inputs: bool
    max_tokens: int
    device: str
    totals: dict[str, Totals] = field(default_factory=lambda: {name: Totals() for name in MODELS})

    def _loss(self, input_ids: list[int], weights: list[int]) -> tuple[float, int]:
        ids = torch.tensor([input_ids], device=self.device)
        logits = self.model(input_ids=ids).logits[0]
        # A prompt-learning adapter adds its virtual tokens' positions in front: the last
        # positions are the example's.
        logits = logits[-len(input_ids) :].float()
        targets, trained = ids[0, 1:], torch.tensor(weights[1:], device=self.device, dtype=torch.float32)
        losses = functional.cross_entropy(logits[:-1], targets, reduction="none")
        return float((losses * trained).sum()), int(trained.sum())

    def _answer(self, prompt: str) -> str:
        tokenizer = self.prepared.tokenizer
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids], device=self.device)
        generate: Callable[..., torch.Tensor] = self.model.generate  # peft's is untyped
        output = generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=self.max_tokens,
            do_sample=False,
            eos_token_id=sorted(self.prepared.eos_ids),
            pad_token_id=tokenizer.pad_token_id,
        )[0].tolist()
        # Generation continues the prompt's ids (a prompt-learning adapter's may return
        # only the new tokens).
        new = output[len(prompt_ids) :] if output[: len(prompt_ids)] == prompt_ids else output
        return str(tokenizer.decode(new, skip_special_tokens=True)).strip()

    def _score(self, encoded_ids: list[int], weights: list[int], prompt: str, reference: str) -> Scored:
        loss_sum, tokens = self._loss(encoded_ids, weights)
        answer = self._answer(prompt)
        return Scored(answer, exact_match(answer, reference), token_f1(answer, reference), loss_sum, tokens)

    @torch.inference_mode()
    def evaluate(self, example: Example) -> ExampleResult | None:
        """Both models on one example; None for one without an assistant turn to answer."""
        reply = self.prepared.last_reply(example)
        if reply is None:
            return None
        prompt, reference = reply
        encoded = self.prepared.encode(example, self.max_length, self.train_on_inputs)
        with self.model.disable_adapter():
            base = self._score(encoded.input_ids, encoded.completion_mask, prompt, reference)
        tuned = self._score(encoded.input_ids, encoded.completion_mask, prompt, reference)
        result = ExampleResult(prompt, reference, {"base": base, "fine_tuned": tuned})
        for name, scored in result.by_model.items():
            self.totals[name].add(scored)
        return result
