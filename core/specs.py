"""The job spec: one pydantic model, validated once by the API, stored as JSON with the
job, and read back by the worker. The OpenAI-shaped fields come first; everything
OpenAI lacks (quantization, LoRA, training knobs) sits in the `qlora` extension object,
which the official client sends with `extra_body`. Defaults follow the QLoRA recipe."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Auto = Literal["auto"]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt knob must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"


class Supervised(_Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class Method(_Strict):
    type: Literal["supervised"] = "supervised"
    supervised: Supervised = Supervised()


class Quantization(_Strict):
    bits: Literal[4] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # "auto": bfloat16 on GPUs that support it, float16 on older GPUs, float32 on CPU.
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


class Lora(_Strict):
    r: Annotated[int, Field(ge=1, le=1024)] = 16
    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: (
        Literal["all-linear"]
        | Annotated[list[Annotated[str, StringConstraints(pattern=r"^[\w.]+$")]], Field(min_length=1)]
    ) = "all-linear"


class Training(_Strict):
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-4
    max_seq_length: Annotated[int, Field(ge=16, le=131072)] = 2048
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_steps: Annotated[int, Field(ge=1)] | None = None
    logging_steps: Annotated[int, Field(ge=1)] = 1


class QLoRA(_Strict):
    quantization: Quantization = Quantization()
    lora: Lora = Lora()
    training: Training = Training()


class JobSpec(_Strict):
    model: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    training_file: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    validation_file: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    suffix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = None
    method: Method = Method()
    # OpenAI's legacy top-level field; accepted and merged into `method`.
    hyperparameters: Hyperparameters | None = None
    qlora: QLoRA = QLoRA()

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > 16:
            raise ValueError("at most 16 metadata keys")
        return value

    @property
    def hparams(self) -> Hyperparameters:
        return self.method.supervised.hyperparameters

    def resolved(self, n_examples: int, seed: int) -> JobSpec:
        """A copy with the seed set and every "auto" hyperparameter replaced."""
        spec = self.model_copy(deep=True)
        if spec.hyperparameters is not None:
            spec.method.supervised.hyperparameters = spec.hyperparameters
            spec.hyperparameters = None
        spec.seed = seed
        spec.method.supervised.hyperparameters = resolve_auto(
            spec.hparams, n_examples, spec.qlora.training.max_seq_length
        )
        return spec


def resolve_auto(hp: Hyperparameters, n_examples: int, max_seq_length: int) -> Hyperparameters:
    """The documented rule for "auto" (README, "Hyperparameters"):
    - batch_size: as many examples as fit in about 16k tokens at max_seq_length, at most
      16 and at most a quarter of the dataset (so an epoch has several steps), at least 1;
    - n_epochs: enough passes for about 300 examples seen, between 1 and 10;
    - learning_rate_multiplier: 1.0 (the QLoRA learning rate 2e-4 as is).
    """
    n = max(n_examples, 1)
    batch = hp.batch_size
    if batch == "auto":
        batch = max(1, min(16, 16384 // max_seq_length, n // 4))
    epochs = hp.n_epochs
    if epochs == "auto":
        epochs = max(1, min(10, math.ceil(300 / n)))
    lrm = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
    return Hyperparameters(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=lrm)
