"""Preference training (DPO) with TRL's DPOTrainer: the same 4-bit base and adapter as
supervised training, the reference model the base with the adapter disabled (TRL does
that when given no `ref_model` and a PEFT model: no second copy of the weights).

The pairs arrive tokenized by core.preferences (the code the pre-flight counts with),
written to Arrow one at a time like supervised examples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from core.datasets import DataFile
from core.preferences import encode_pair, pairs_of
from core.specs import ResolvedDpoHyperparameters, ResolvedSpec
from core.tokenization import PreparedTokenizer
from worker.training.callbacks import TrainedTokens
from worker.training.data import from_generator
from worker.training.distributed import accumulation_per_rank
from worker.training.resume import ExactAdapterResume


def _encoded_pairs(prepared: PreparedTokenizer, source: DataFile, max_length: int) -> Iterator[dict[str, Any]]:
    for pair in pairs_of(source):
        encoded = encode_pair(prepared, pair)
        if encoded.trains(max_length):  # a prompt that fills max_length leaves no reply token to compare
            yield {
                "prompt_ids": encoded.prompt_ids,
                "chosen_ids": encoded.chosen_ids,
                "rejected_ids": encoded.rejected_ids,
            }


def pair_dataset(prepared: PreparedTokenizer, source: DataFile, max_length: int, cache_dir: Path) -> Dataset:
    """The training pairs as token ids (prompt, chosen, rejected); TRL's collator cuts
    prompt + reply to max_length."""
    return from_generator(
        _encoded_pairs,
        {"prepared": prepared, "source": source, "max_length": max_length},
        cache_dir,
        f"no pair of {source.name} has a prompt shorter than max_seq_length={max_length}",
    )


class ResumableDPOTrainer(ExactAdapterResume, DPOTrainer):
    """DPOTrainer on pairs tokenized already (it would otherwise render and tokenize
    prompt/chosen/rejected text itself), with the exact adapter resume."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        return dataset

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        # Called for every training micro-batch: the tokens in DPO's loss are the replies'
        # (preferred and rejected), TRL's completion mask.
        super()._track_num_input_tokens(inputs)
        TrainedTokens.of(self).add(self, inputs["completion_mask"].sum())


def dpo_config(spec: ResolvedSpec, common: dict[str, Any]) -> DPOConfig:
    """The DPO trainer's arguments: the common ones, padded batches of `batch_size` pairs
    (TRL's DPO has no padding-free path yet), sequences cut to max_seq_length, beta."""
    hp, training = spec.hparams, spec.qlora.training
    assert isinstance(hp, ResolvedDpoHyperparameters), "a dpo job's hyperparameters have beta"
    return DPOConfig(
        **common,
        beta=hp.beta,
        max_length=training.max_seq_length,
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size,
        gradient_accumulation_steps=accumulation_per_rank(training.gradient_accumulation_steps),
    )
