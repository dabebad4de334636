"""The job spec, as asked and as resolved.

`JobSpec` is what a client sends: validated once by the API, with "auto" wherever the
service may choose. Job creation turns it into a `ResolvedSpec` (`resolve()`), with the
seed, the hyperparameters, the data format and packing decided; that is what is stored
with the job and the only spec a worker reads. What depends on the device a job lands
on stays as asked and is resolved by the worker for that device (`qlora.performance`,
`quantization.compute_dtype`; `training.checkpoint_steps: "auto"` means "by time").

The OpenAI-shaped fields come first; everything OpenAI lacks (quantization, LoRA,
training knobs) sits in the `qlora` extension object, which the official client sends
with `extra_body`. Defaults follow the QLoRA recipe."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from core.errors import InvalidRequest
from core.formats import FormatName

Auto = Literal["auto"]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]


def no_nul(value: str) -> str:
    # Postgres text cannot hold NUL: an id containing one could only fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# The id of a stored object (a file).
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(no_nul)]
# A model's or checkpoint's name: a base model, `ft:<base>:<org>[:<suffix>]:<job id>`
# (which a hub id as base, an organization id and a suffix make up to about 400
# characters), that and `:ckpt-step-<step>`, or a checkpoint's id.
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=512), AfterValidator(no_nul)]


class SpecError(ValueError):
    """A rule across fields, refused at the field the client should change (`param`):
    the API's error names it, where a plain ValueError of a model validator would name
    only the object."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt knob must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto = "auto"
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto = "auto"
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"


class Supervised(_Strict):
    hyperparameters: Hyperparameters = Hyperparameters()


class DpoHyperparameters(Hyperparameters):
    # How far the tuned model may move from the reference (the base without the adapter):
    # higher keeps it closer. "auto": 0.1, the DPO paper's and TRL's default.
    beta: Annotated[float, Field(gt=0, le=10)] | Auto = "auto"


class Dpo(_Strict):
    hyperparameters: DpoHyperparameters = DpoHyperparameters()


MethodType = Literal["supervised", "dpo"]
DEFAULT_BETA = 0.1


class Method(_Strict):
    """OpenAI's method object: `type` and the settings object named after it."""

    type: MethodType = "supervised"
    supervised: Supervised | None = None
    dpo: Dpo | None = None

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> Method:
        for other in ("supervised", "dpo"):
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} is given but method.type is {self.type!r}")
        if self.type == "supervised" and self.supervised is None:
            self.supervised = Supervised()
        if self.type == "dpo" and self.dpo is None:
            self.dpo = Dpo()
        return self

    @property
    def hyperparameters(self) -> Hyperparameters:
        settings = self.dpo if self.type == "dpo" else self.supervised
        assert settings is not None, "filled in by validation"
        return settings.hyperparameters


class Quantization(_Strict):
    bits: Literal[4] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    # "auto": bfloat16 on GPUs that support it, float16 on older GPUs, float32 on CPU.
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"


TargetModules = (
    Literal["all-linear"] | Annotated[list[Annotated[str, StringConstraints(pattern=r"^[\w.]+$")]], Field(min_length=1)]
)
Dropout = Annotated[float, Field(ge=0, lt=1)]
Rank = Annotated[int, Field(ge=1, le=1024)]
VirtualTokens = Annotated[int, Field(ge=1, le=1024)]


class Lora(_Strict):
    """LoRA (and QLoRA on a 4-bit base); DoRA and rsLoRA as flags."""

    type: Literal["lora"] = "lora"
    r: Rank = 16
    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    dropout: Dropout = 0.05
    target_modules: TargetModules = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False


class AdaLora(_Strict):
    """LoRA whose rank budget is reallocated during training by importance."""

    type: Literal["adalora"]
    init_r: Rank = 12
    target_r: Rank = 8
    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    dropout: Dropout = 0.05
    target_modules: TargetModules = "all-linear"
    # Fractions of all steps: budget warm-up before pruning starts, final fine-tuning after it ends.
    tinit_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    tfinal_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    delta_t: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _ranks(self) -> AdaLora:
        if self.target_r > self.init_r:
            raise ValueError("target_r must not exceed init_r")
        if self.tinit_fraction + self.tfinal_fraction >= 1:
            raise ValueError("tinit_fraction + tfinal_fraction must leave steps for budget allocation")
        return self


class IA3(_Strict):
    """Learned rescaling vectors for keys, values and the feed-forward input."""

    type: Literal["ia3"]
    target_modules: Annotated[list[str], Field(min_length=1)] = ["k_proj", "v_proj", "down_proj"]
    feedforward_modules: list[str] = ["down_proj"]

    @model_validator(mode="after")
    def _feedforward_subset(self) -> IA3:
        if not set(self.feedforward_modules) <= set(self.target_modules):
            raise ValueError("feedforward_modules must be a subset of target_modules")
        return self


class LoHa(_Strict):
    """Low-rank Hadamard product (LyCORIS)."""

    type: Literal["loha"]
    r: Rank = 8
    alpha: Annotated[int, Field(ge=1, le=4096)] = 16
    rank_dropout: Dropout = 0.0
    module_dropout: Dropout = 0.0
    target_modules: TargetModules = "all-linear"


class LoKr(_Strict):
    """Low-rank Kronecker product (LyCORIS)."""

    type: Literal["lokr"]
    r: Rank = 8
    alpha: Annotated[int, Field(ge=1, le=4096)] = 16
    rank_dropout: Dropout = 0.0
    module_dropout: Dropout = 0.0
    target_modules: TargetModules = "all-linear"
    decompose_both: bool = False


class PromptTuning(_Strict):
    """Trained soft-prompt embeddings prepended to every input."""

    type: Literal["prompt_tuning"]
    num_virtual_tokens: VirtualTokens = 20
    # Initialise the soft prompt from the embeddings of this text (else randomly).
    init_text: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


class PrefixTuning(_Strict):
    """Trained key/value prefixes at every layer."""

    type: Literal["prefix_tuning"]
    num_virtual_tokens: VirtualTokens = 20
    prefix_projection: bool = False
    encoder_hidden_size: Annotated[int, Field(ge=1, le=65536)] = 512


class PTuning(_Strict):
    """Soft prompts produced by a small trained encoder (P-tuning)."""

    type: Literal["p_tuning"]
    num_virtual_tokens: VirtualTokens = 20
    encoder_hidden_size: Annotated[int, Field(ge=1, le=65536)] = 128
    encoder_reparameterization_type: Literal["MLP", "LSTM"] = "MLP"


class MultitaskPromptTuning(_Strict):
    """One soft prompt per task (multitask prompt tuning, Wang et al. 2023): a prompt
    shared by all tasks, scaled per task by a low-rank matrix; each example's `task`
    picks its prompt. The tasks are the training file's (core.tasks)."""

    type: Literal["multitask_prompt_tuning"]
    num_virtual_tokens: VirtualTokens = 20
    # The rank of each task's matrix (the paper's r; 1 there).
    num_ranks: Annotated[int, Field(ge=1, le=64)] = 1
    # Initialise the shared prompt from the embeddings of this text (else randomly).
    init_text: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None


def _adapter_type(value: Any) -> str | None:
    # An adapter object without "type" is LoRA, the default method. Anything but an
    # object has no type: None makes pydantic refuse it (union_tag_not_found).
    return value.get("type", "lora") if isinstance(value, dict) else getattr(value, "type", None)


Adapter = Annotated[
    Annotated[Lora, Tag("lora")]
    | Annotated[AdaLora, Tag("adalora")]
    | Annotated[IA3, Tag("ia3")]
    | Annotated[LoHa, Tag("loha")]
    | Annotated[LoKr, Tag("lokr")]
    | Annotated[PromptTuning, Tag("prompt_tuning")]
    | Annotated[PrefixTuning, Tag("prefix_tuning")]
    | Annotated[PTuning, Tag("p_tuning")]
    | Annotated[MultitaskPromptTuning, Tag("multitask_prompt_tuning")],
    Discriminator(_adapter_type),
]
ADAPTER_TYPES = (
    "lora",
    "adalora",
    "ia3",
    "loha",
    "lokr",
    "prompt_tuning",
    "prefix_tuning",
    "p_tuning",
    "multitask_prompt_tuning",
)
PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning", "p_tuning", "multitask_prompt_tuning")
# peft 0.21's LoHa and LoKr cannot wrap bitsandbytes 4-bit layers: they train on the
# unquantized base (quantization null).
NEEDS_UNQUANTIZED = ("loha", "lokr")


def trains_on_token_budget(adapter_type: str) -> bool:
    """Whether batches may be rows packed to a token budget: prompt-learning methods
    prepend virtual tokens per row, and AdaLoRA's rank schedule counts example batches."""
    return adapter_type not in (*PROMPT_LEARNING, "adalora")


def packs_by_default(adapter_type: str) -> bool:
    """Padding-free batches ("packing": a batch's examples concatenated into one row whose
    position ids restart per example, so no example attends to another) suit every method
    but prompt learning, which needs one example per row for its virtual tokens."""
    return adapter_type not in PROMPT_LEARNING


class Training(_Strict):
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2e-4
    max_seq_length: Annotated[int, Field(ge=16, le=131072)] = 2048
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_steps: Annotated[int, Field(ge=1)] | None = None
    logging_steps: Annotated[int, Field(ge=1)] = 1
    # Evaluate on the validation data every N steps (and always at the end); null: once per epoch.
    eval_steps: Annotated[int, Field(ge=1)] | None = None
    # Save a checkpoint (adapter, optimizer, scheduler, RNG, data position) every N
    # optimizer steps; "auto": every 10 minutes of training (the worker's
    # FTSVC_CHECKPOINT_INTERVAL_SECONDS). A job resumes from its newest.
    checkpoint_steps: Annotated[int, Field(ge=1)] | Auto = "auto"
    # How many of a job's newest checkpoints are kept; older ones are deleted.
    keep_checkpoints: Annotated[int, Field(ge=1, le=100)] = 3


class Data(_Strict):
    # "auto": the format the training file was validated as.
    format: Literal["auto", "chat", "sharegpt", "prompt_completion", "instruction", "qa", "text", "preference"] = "auto"
    # False: loss on the assistant's tokens only (prompts, system and user turns masked).
    train_on_inputs: bool = False
    # Concatenate examples into rows without padding (position ids restart per example,
    # so no example attends to another). "auto": on, except for prompt-learning methods.
    packing: bool | Literal["auto"] = "auto"
    # Hold out this fraction of the training file (chosen with the job's seed) for evaluation.
    validation_split: Annotated[float, Field(gt=0, lt=0.5)] | None = None


class Performance(_Strict):
    """How training runs fast; none of these changes what is computed. "auto" is
    resolved by the worker for its device (README, "Speed") and reported on the job."""

    # Micro-batches packed to this many tokens of whole examples (best-fit) instead of
    # batch_size examples, with gradient accumulation to the requested effective batch.
    # null: batches of batch_size examples.
    tokens_per_step: Annotated[int, Field(ge=64, le=1_048_576)] | Literal["auto"] | None = "auto"
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    # Liger kernel's fused RMSNorm, RoPE and SwiGLU (CUDA only).
    liger_kernel: bool | Literal["auto"] = "auto"
    optimizer: Literal["auto", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit"] = "auto"
    # torch_varlen: PyTorch's FlashAttention over each packed example (CUDA); sdpa: one
    # masked attention over the whole row.
    attention: Literal["auto", "sdpa", "torch_varlen"] = "auto"
    # peft's prepare_model_for_kbit_training casts unquantized weights (norms, embeddings,
    # head) to fp32, which keeps the whole residual stream in fp32. "auto": off with bf16
    # compute on a GPU (norms compute in fp32 internally anyway), on elsewhere.
    upcast_unquantized: bool | Literal["auto"] = "auto"
    # LoRA on a 4-bit layer as one autograd function (worker.training.fused_lora): the
    # adapter's output added by the matmul itself, not by separate passes. "auto": on a GPU.
    fused_lora: bool | Literal["auto"] = "auto"


MAX_EVALUATION_EXAMPLES = 10_000


class EvaluationRequest(_Strict):
    """The body of `POST /v1/fine_tuning/jobs/{id}/evaluations` (every field optional),
    and a job's `qlora.evaluation`: one that starts once the job succeeded."""

    file: str | None = Field(
        default=None,
        description="The id of a file of examples in any training format but `text` (uploaded with purpose "
        "`fine-tune`); the reference answer of each is its last assistant turn. Default: the job's "
        "`validation_file`",
    )
    max_examples: Annotated[int, Field(ge=1, le=MAX_EVALUATION_EXAMPLES)] | None = Field(
        default=None,
        description=f"Evaluate the first this many examples (at most {MAX_EVALUATION_EXAMPLES}); default: all",
    )
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=64, description="The longest answer each model generates, in tokens"
    )
    sample_size: Annotated[int, Field(ge=0, le=100)] = Field(
        default=5, description="How many examples (the first ones) the evaluation shows side by side"
    )


class Resources(_Strict):
    """What a job runs on. `gpus`: how many GPUs of one host train it; more than one runs
    the same recipe once per GPU with torch DDP (each GPU loads the 4-bit base and trains
    on its share of every batch; README, "Multi-GPU jobs")."""

    gpus: int = Field(1, ge=1, le=8)


class QLoRA(_Strict):
    # null: no quantization (the base in the compute dtype), for adapters that need it.
    quantization: Quantization | None = Quantization()
    adapter: Adapter = Lora()
    training: Training = Training()
    data: Data = Data()
    performance: Performance = Performance()
    # Evaluate the fine-tuned model against its base once the job succeeded.
    evaluation: EvaluationRequest | None = None
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _performance_fits(self) -> QLoRA:
        budget, kind = self.performance.tokens_per_step, self.adapter.type
        if isinstance(budget, int):
            if not trains_on_token_budget(kind):
                raise ValueError(
                    f"{kind} cannot train on token-budget batches: set qlora.performance.tokens_per_step to null"
                )
            if budget < self.training.max_seq_length:
                raise ValueError(
                    "qlora.performance.tokens_per_step must hold the longest example: at least "
                    f"max_seq_length ({self.training.max_seq_length})"
                )
        if self.performance.gradient_checkpointing is True and kind == "prefix_tuning":
            raise ValueError("prefix_tuning cannot use gradient checkpointing (peft)")
        return self

    @model_validator(mode="after")
    def _adapter_fits_packing(self) -> QLoRA:
        if self.data.packing is True and self.adapter.type in PROMPT_LEARNING:
            raise ValueError(f"{self.adapter.type} needs one example per row: set qlora.data.packing to false")
        return self

    @model_validator(mode="after")
    def _adapter_fits_quantization(self) -> QLoRA:
        if self.adapter.type in NEEDS_UNQUANTIZED:
            if "quantization" not in self.model_fields_set:
                self.quantization = None
            elif self.quantization is not None:
                raise ValueError(f"{self.adapter.type} cannot wrap 4-bit layers (peft); set qlora.quantization to null")
        return self


# W&B's limits on a run's tags; the names of projects, entities and runs are bounded
# here only so that a request stays small (W&B itself refuses a bad name at run start).
WandbName = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(no_nul)]
WandbTag = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(no_nul)]


class WandbIntegration(_Strict):
    """OpenAI's Weights & Biases settings: the project the run is created in, its
    display name (default: the job id), its entity (default: the API key's) and tags."""

    project: WandbName
    name: WandbName | None = None
    entity: WandbName | None = None
    tags: Annotated[list[WandbTag], Field(max_length=20)] = []


class Integration(_Strict):
    """One entry of OpenAI's `integrations`: only `wandb` exists (in OpenAI's API too)."""

    type: Literal["wandb"]
    wandb: WandbIntegration


def _one_of_each_type(integrations: list[Integration]) -> list[Integration]:
    types = [i.type for i in integrations]
    if len(set(types)) < len(types):
        raise ValueError("give each type of integration once (a job reports to one W&B run)")
    return integrations


Integrations = Annotated[list[Integration], AfterValidator(_one_of_each_type)]


class JobSpec(_Strict):
    # A base model, or a fine-tuned model (or checkpoint) whose adapter the job trains
    # further on the same base (core.continued_training).
    model: ModelName
    training_file: ObjectId
    validation_file: ObjectId | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    suffix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    metadata: dict[MetadataKey, MetadataValue] | None = None
    method: Method = Method()
    # OpenAI's legacy top-level field; accepted and merged into `method`.
    hyperparameters: Hyperparameters | None = None
    qlora: QLoRA = QLoRA()
    # Start from the adapter weights of a checkpoint of an earlier job (same base model),
    # by id or by name (`ft:...:ckpt-step-<step>`); the adapter's configuration then
    # comes from that checkpoint.
    from_checkpoint: ModelName | None = None
    # Trackers the worker reports the run to (OpenAI's field).
    integrations: Integrations = []

    @model_validator(mode="after")
    def _one_validation_source(self) -> JobSpec:
        if self.validation_file and self.qlora.data.validation_split:
            raise ValueError("give either validation_file or qlora.data.validation_split, not both")
        return self

    @model_validator(mode="after")
    def _one_length(self) -> JobSpec:
        # max_steps decides how long training runs; an n_epochs beside it would be
        # either ignored or a second, contradicting length. "auto" is resolved from it.
        if self.qlora.training.max_steps is not None and isinstance(self.hparams.n_epochs, int):
            raise SpecError(
                "give either n_epochs or qlora.training.max_steps, not both: max_steps decides how long training "
                'runs (leave n_epochs at "auto" and the job reports the epochs max_steps covers)',
                param="qlora.training.max_steps",
            )
        return self

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and len(value) > 16:
            raise ValueError("at most 16 metadata keys")
        return value

    @model_validator(mode="after")
    def _method_fits(self) -> JobSpec:
        if self.method.type != "supervised":
            if self.hyperparameters is not None:
                raise ValueError(
                    f"hyperparameters (top level) are for supervised jobs; give them in method.{self.method.type}"
                )
            perf = self.qlora.performance
            if isinstance(perf.tokens_per_step, int):
                raise ValueError(
                    f"{self.method.type} trains on padded batches of pairs: set qlora.performance.tokens_per_step "
                    "to null or auto"
                )
            if self.qlora.data.packing is True:
                raise ValueError(
                    f"{self.method.type} trains on padded batches of pairs: set qlora.data.packing to auto"
                )
            if self.qlora.adapter.type in PROMPT_LEARNING:
                raise ValueError(
                    f"{self.method.type} needs an adapter that can be switched off for the reference model: "
                    f"{self.qlora.adapter.type} is not supported (use lora)"
                )
        return self

    @property
    def hparams(self) -> Hyperparameters:
        # OpenAI's legacy top-level field, when given, is what the client meant.
        return self.hyperparameters or self.method.hyperparameters


# -- as resolved at job creation ------------------------------------------------------------
class ResolvedHyperparameters(_Strict):
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float


class ResolvedSupervised(_Strict):
    hyperparameters: ResolvedHyperparameters


class ResolvedDpoHyperparameters(ResolvedHyperparameters):
    beta: float


class ResolvedDpo(_Strict):
    hyperparameters: ResolvedDpoHyperparameters


class ResolvedMethod(_Strict):
    type: MethodType = "supervised"
    supervised: ResolvedSupervised | None = None
    dpo: ResolvedDpo | None = None

    @model_validator(mode="after")
    def _settings_of_its_type(self) -> ResolvedMethod:
        if getattr(self, self.type) is None:
            raise ValueError(f"method.{self.type} is missing")
        return self

    @property
    def hyperparameters(self) -> ResolvedHyperparameters:
        settings = self.dpo if self.type == "dpo" else self.supervised
        assert settings is not None, "checked by validation"
        return settings.hyperparameters


def resolve_method(method: Method, hp: Hyperparameters, n_examples: int, training: Training) -> ResolvedMethod:
    """The method with its hyperparameters resolved (`hp`: the ones the client meant)."""
    common = resolve_hyperparameters(hp, n_examples, training)
    if method.type == "dpo":
        assert isinstance(hp, DpoHyperparameters)
        beta = DEFAULT_BETA if hp.beta == "auto" else hp.beta
        return ResolvedMethod(
            type="dpo", dpo=ResolvedDpo(hyperparameters=ResolvedDpoHyperparameters(**common.model_dump(), beta=beta))
        )
    return ResolvedMethod(supervised=ResolvedSupervised(hyperparameters=common))


class ResolvedData(_Strict):
    format: FormatName
    train_on_inputs: bool
    packing: bool
    validation_split: float | None
    # Multitask prompt tuning: the task names, in task-id order (core.tasks); else None.
    tasks: list[str] | None = None


class ResolvedQLoRA(_Strict):
    quantization: Quantization | None
    adapter: Adapter
    training: Training
    data: ResolvedData
    # Resolved by the worker for its device (worker.training.speed), reported on the job.
    performance: Performance
    # Jobs created before evaluations existed have none in their stored spec.
    evaluation: EvaluationRequest | None = None
    # Jobs created before resources existed have the default in their stored spec.
    resources: Resources = Resources()


class ResolvedSpec(_Strict):
    """What a job runs with: stored with the job, read by the worker."""

    model: str
    training_file: str
    validation_file: str | None
    seed: int
    suffix: str | None
    metadata: dict[str, str] | None
    method: ResolvedMethod
    qlora: ResolvedQLoRA
    from_checkpoint: str | None
    # Jobs created before integrations existed have none in their stored spec.
    integrations: list[Integration] = []

    @property
    def hparams(self) -> ResolvedHyperparameters:
        return self.method.hyperparameters


def resolve(
    spec: JobSpec,
    *,
    n_examples: int,
    seed: int,
    data_format: FormatName,
    trained: ResolvedQLoRA | None = None,
    tasks: list[str] | None = None,
) -> ResolvedSpec:
    """The spec with every choice job creation can make made. `n_examples`: training
    examples (after any validation split); `data_format`: what the training file was
    validated as; `trained`: the settings of the checkpoint a job starts from, whose
    adapter and quantization it keeps training; `tasks`: a multitask adapter's tasks
    (core.tasks.job_tasks)."""
    qlora = spec.qlora
    adapter, quantization = (trained.adapter, trained.quantization) if trained else (qlora.adapter, qlora.quantization)
    packing = qlora.data.packing
    data = ResolvedData(
        format=data_format,
        train_on_inputs=qlora.data.train_on_inputs,
        # Preference pairs train on padded batches (TRL's DPO has no padding-free path).
        packing=packs_by_default(adapter.type) and spec.method.type == "supervised" if packing == "auto" else packing,
        validation_split=qlora.data.validation_split,
        tasks=tasks,
    )
    return ResolvedSpec(
        model=spec.model,
        training_file=spec.training_file,
        validation_file=spec.validation_file,
        seed=seed,
        suffix=spec.suffix,
        metadata=spec.metadata,
        method=resolve_method(spec.method, spec.hparams, n_examples, qlora.training),
        qlora=ResolvedQLoRA(
            quantization=quantization,
            adapter=adapter,
            training=qlora.training,
            data=data,
            performance=qlora.performance,
            evaluation=qlora.evaluation,
            resources=qlora.resources,
        ),
        from_checkpoint=spec.from_checkpoint,
        integrations=spec.integrations,
    )


def check_data_fits_method(method: MethodType, data_format: str | None, param: str, file_id: str) -> None:
    """Preference pairs train with a preference method only, and a preference method
    only on preference pairs (a 400 at job creation naming the file's field)."""
    if method == "supervised" and data_format == "preference":
        raise InvalidRequest(
            f"{param} {file_id} holds preference pairs, which train with method.type 'dpo'; a supervised job "
            "needs examples (chat, prompt_completion, ...)",
            param=param,
            code="method_data_mismatch",
        )
    if method != "supervised" and data_format != "preference":
        raise InvalidRequest(
            f"method.type {method!r} trains on preference pairs, but {param} {file_id} is in format "
            f"{data_format!r}; upload a file in format preference (prompt, preferred and rejected replies)",
            param=param,
            code="method_data_mismatch",
        )


def resolve_hyperparameters(hp: Hyperparameters, n_examples: int, training: Training) -> ResolvedHyperparameters:
    """The documented rule for "auto" (README, "Hyperparameters"):
    - batch_size: as many examples as fit in about 16k tokens at max_seq_length, at most
      16 and at most a quarter of the dataset (so an epoch has several steps), at least 1;
    - n_epochs: enough passes for about 300 examples seen, between 1 and 10; with
      max_steps, the epochs those steps start (the last one may be partial), counted as
      the trainer does: ceil(ceil(n / batch_size) / gradient_accumulation_steps) steps
      per epoch. The worker reports it again for the batches it really builds (token-
      budget batches on a GPU make fewer steps per epoch);
    - learning_rate_multiplier: 1.0 (the QLoRA learning rate 2e-4 as is).
    """
    n = max(n_examples, 1)
    batch = (
        hp.batch_size if isinstance(hp.batch_size, int) else max(1, min(16, 16384 // training.max_seq_length, n // 4))
    )
    if training.max_steps is not None:
        steps_per_epoch = math.ceil(math.ceil(n / batch) / training.gradient_accumulation_steps)
        epochs = math.ceil(training.max_steps / steps_per_epoch)
    else:
        epochs = hp.n_epochs if isinstance(hp.n_epochs, int) else max(1, min(10, math.ceil(300 / n)))
    lrm = 1.0 if isinstance(hp.learning_rate_multiplier, str) else hp.learning_rate_multiplier
    return ResolvedHyperparameters(n_epochs=epochs, batch_size=batch, learning_rate_multiplier=lrm)


def training_examples(examples: int, validation_split: float) -> int:
    """How many examples train once the validation split is set aside (at least 1: the
    hyperparameter rules divide by it)."""
    if validation_split:
        examples -= max(1, round(examples * validation_split))
    return max(examples, 1)
