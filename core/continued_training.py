"""Continued training: a job whose `model` names a fine-tuned model (or a checkpoint), or
that gives `from_checkpoint`, trains that adapter further on its base model, with its
own data and hyperparameters. The adapter and quantization settings are the trained
adapter's; a request that gives other values for them is refused naming the field,
rather than silently trained with the adapter's."""

from __future__ import annotations

from typing import Any, NoReturn

from pydantic import BaseModel
from sqlalchemy.orm import Session

from core import fine_tuned_models
from core.errors import InvalidRequest
from core.fine_tuned_models import TrainedAdapter
from core.specs import QLoRA, ResolvedQLoRA, ResolvedSpec


def starting_adapter(session: Session, org_id: str, model: str, from_checkpoint: str | None) -> TrainedAdapter | None:
    """The adapter a new job continues (None: it trains a new one), held until the job is
    committed (core.fine_tuned_models.hold). With both a fine-tuned `model` and
    `from_checkpoint`, the checkpoint must be one of that model's job's; with a base
    `model`, the checkpoint must have been trained on it."""
    named = fine_tuned_models.continued_from(model, from_checkpoint)
    if named is None:
        return None
    name, param = named
    adapter = fine_tuned_models.find(session, org_id, name, param)
    if from_checkpoint is not None:
        _check_checkpoint_fits_model(session, org_id, adapter, model)
    fine_tuned_models.hold(session, adapter, param)
    return adapter


def _check_checkpoint_fits_model(session: Session, org_id: str, checkpoint: TrainedAdapter, model: str) -> None:
    if fine_tuned_models.is_fine_tuned_name(model):
        continued = fine_tuned_models.find(session, org_id, model, "model")
        if continued.job.id != checkpoint.job.id:
            raise InvalidRequest(
                f"from_checkpoint {checkpoint.name} is a checkpoint of job {checkpoint.job.id}, not of the model "
                f"{model} (job {continued.job.id}) the job continues; give the base model "
                f"{checkpoint.base_model!r} as model to start from that checkpoint",
                param="from_checkpoint",
                code="checkpoint_model_mismatch",
            )
    elif checkpoint.base_model != model:
        raise InvalidRequest(
            f"Checkpoint {checkpoint.name} was trained on {checkpoint.base_model!r}, not {model!r}; an adapter only "
            "fits the base model it was trained on",
            param="from_checkpoint",
            code="checkpoint_model_mismatch",
        )


def trained_settings(asked: QLoRA, adapter: TrainedAdapter) -> ResolvedQLoRA:
    """The adapter and quantization settings `adapter` was trained with, which the job
    keeps; those of `asked` that the client gave explicitly must equal them."""
    trained = ResolvedSpec.model_validate(adapter.job.spec).qlora
    if "adapter" in asked.model_fields_set:
        _refuse_differences("qlora.adapter", asked.adapter, trained.adapter, adapter.name)
    if "quantization" in asked.model_fields_set:
        if asked.quantization is None or trained.quantization is None:
            if asked.quantization != trained.quantization:
                _refuse("qlora.quantization", _shown(asked.quantization), _shown(trained.quantization), adapter.name)
        else:
            _refuse_differences("qlora.quantization", asked.quantization, trained.quantization, adapter.name)
    return trained


def _refuse_differences(path: str, asked: BaseModel, trained: BaseModel, source: str) -> None:
    """Compare the fields given explicitly; the adapter type first (an adapter object
    without `type` is LoRA), since another type's fields cannot be compared."""
    if getattr(asked, "type", None) != getattr(trained, "type", None):
        _refuse(f"{path}.type", getattr(asked, "type", None), getattr(trained, "type", None), source)
    for name in sorted(asked.model_fields_set):
        mine, theirs = getattr(asked, name), getattr(trained, name)
        if mine != theirs:
            _refuse(f"{path}.{name}", mine, theirs, source)


def _shown(value: BaseModel | None) -> Any:
    return None if value is None else value.model_dump(mode="json")


def _refuse(param: str, asked: Any, trained: Any, source: str) -> NoReturn:
    raise InvalidRequest(
        f"{param} is {asked!r}, but {source} was trained with {trained!r}: a job that continues an adapter keeps "
        f"its adapter and quantization settings; leave {param} out or give {trained!r}",
        param=param,
        code="adapter_settings_mismatch",
    )
