"""The count of tokens in the loss, and a hub model that cannot be fetched."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator

from core.registry import ModelRef
from worker.model_download import fetch_hub_model
from worker.training.callbacks import TrainedTokens
from worker.training.failures import ModelLoadError
from worker.training.reporting import ConsoleReporter


def test_trained_tokens_count_the_labels_the_loss_predicts() -> None:
    counter = TrainedTokens()
    # One process: the accelerator's gather over ranks is the count itself.
    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True))
    # A padded batch: a row's first label predicts nothing (the causal shift); -100 is masked.
    counter.add(trainer, TrainedTokens.in_loss(torch.tensor([[7, -100, 5, 6, -100], [-100, -100, 9, -100, -100]])))
    assert counter.count == 3
    # A packed row (padding-free): each example's first label is already -100.
    counter.add(trainer, TrainedTokens.in_loss(torch.tensor([[-100, -100, 4, -100, 8, 8]])))
    assert counter.count == 6
    assert TrainedTokens(**counter.state()["args"]).count == 6  # what a checkpoint keeps


def test_a_local_model_is_not_fetched_and_a_hub_model_that_cannot_be_says_so() -> None:
    local = ModelRef("tiny-llama", "/models/tiny-llama", True)
    assert fetch_hub_model(local, ConsoleReporter()) is local
    # The tests run offline (HF_HUB_OFFLINE): the hub cannot be reached.
    with pytest.raises(ModelLoadError) as failure:
        fetch_hub_model(ModelRef("someone/no-such-model", "someone/no-such-model", False), ConsoleReporter())
    assert failure.value.param == "model"
    assert str(failure.value).startswith("Cannot download someone/no-such-model from the Hugging Face hub: ")
