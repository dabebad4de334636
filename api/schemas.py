"""The bodies of the API's successful answers: OpenAI's wire shapes plus this service's
extension fields, as pydantic models. They are what /openapi.json documents for every
200 and what the routes return; each builds itself from its database row (`from_row`),
validated once there. api.openapi.ModelRoute sends a returned model as its
`model_dump_json()`, without FastAPI's second validation."""

from __future__ import annotations

from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from core import fine_tuned_models
from core.catalog import ListedModel
from core.datasets import FileType
from core.files import expires_at
from core.formats import FormatName
from core.jobs import estimated_finish
from core.merges import BaseWeights, Dtype
from core.models import (
    Checkpoint,
    Evaluation,
    File,
    Job,
    JobEvent,
    JobMetric,
    Merge,
    MergeEvent,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from core.specs import Integration, ResolvedHyperparameters, ResolvedMethod, ResolvedQLoRA
from core.states import EvaluationStatus, JobStatus, Level, MergeStatus
from core.usage import STORED, StorageUsage
from core.webhooks import DeliveryStatus, EventType

Item = TypeVar("Item", bound=BaseModel)


class _Wire(BaseModel):
    # Every field is always sent, defaults included: the documented schema says so
    # (`required`), and an unknown key in a row is an error here, not a silent extra.
    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class ListPage(_Wire, Generic[Item]):
    """A page of a list, newest first (OpenAI's cursor paging)."""

    object: Literal["list"] = "list"
    data: list[Item]
    has_more: bool = Field(description="Whether another page follows: ask for it with `after` = `last_id`")
    first_id: str | None = Field(description="The id of the first object of `data`; null when empty or id-less")
    last_id: str | None = Field(description="The id of the last object of `data`, the `after` of the next page")

    @classmethod
    def of(cls, data: list[Item], has_more: bool) -> Self:
        first, last = (getattr(data[0], "id", None), getattr(data[-1], "id", None)) if data else (None, None)
        return cls(data=data, has_more=has_more, first_id=first, last_id=last)


# -- files ------------------------------------------------------------------------------


class FileProblem(_Wire):
    """Something wrong with an uploaded file, and where."""

    line: int | None = Field(description="The line in the file (JSONL, CSV); null for Parquet and JSON arrays")
    field: str | None = Field(description="The example's field at fault, if one is")
    message: str
    row: int | None = Field(default=None, description="The 1-based number of the example, in any file type")


class FileObject(_Wire):
    """OpenAI's file object, and what validation found in it."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(description="Unix seconds")
    expires_at: int | None = Field(
        description="Unix seconds: when a rejected upload (`status: error`) is removed; null: kept until deleted"
    )
    filename: str
    purpose: str = Field(description="`fine-tune` for uploads, `fine-tune-results` for a job's result files")
    status: Literal["processed", "error"] = Field(
        description="`error`: the file failed validation (see `problems`) and cannot train"
    )
    status_details: str | None = Field(description="What validation found: the example count, or the problems")
    sha256: str = Field(description="Of the bytes as uploaded")
    format: FormatName | None = Field(description="The dataset format it was validated as; null when unreadable")
    file_type: FileType | None = Field(description="How the bytes were read; null when unreadable")
    examples: int = Field(description="Valid examples in the file")
    tasks: dict[str, int] | None = Field(
        description="Valid examples per task name (the examples' `task` field, which multitask prompt tuning "
        "trains on); null when the examples have no task"
    )
    problems: list[FileProblem] = Field(description="The first problems found (at most 100); empty when processed")

    @classmethod
    def from_row(cls, f: File) -> Self:
        return cls.model_validate(
            {
                "id": f.id,
                "bytes": f.bytes,
                "created_at": f.created_at,
                "expires_at": expires_at(f),
                "filename": f.filename,
                "purpose": f.purpose,
                "status": f.status,
                "status_details": f.status_details,
                "sha256": f.sha256,
                "format": f.format,
                "file_type": f.file_type,
                "examples": f.n_examples,
                "tasks": f.tasks,
                "problems": f.problems,
            }
        )


class DeletedFile(_Wire):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True


class DeletedJob(_Wire):
    """OpenAI's deletion shape, for a fine-tuning job."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    deleted: Literal[True] = True


class DeletedCheckpoint(_Wire):
    """OpenAI's deletion shape, for a checkpoint."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    deleted: Literal[True] = True


class PreviewSegment(_Wire):
    """Consecutive tokens that are all trained or all not."""

    text: str
    trained: bool = Field(description="Whether the loss is computed on these tokens")
    tokens: int


class PreviewExample(_Wire):
    tokens: int = Field(description="Tokens after truncation to `max_seq_length`")
    trained_tokens: int
    truncated: bool
    marked: str = Field(description="The rendered example with its trained spans wrapped in `marker`")
    segments: list[PreviewSegment]


class FilePreview(_Wire):
    """Examples of a file rendered through a base model's chat template, as training
    encodes them."""

    object: Literal["file.preview"] = "file.preview"
    file_id: str
    model: str
    format: FormatName | None
    chat_template: Literal["model", "default"] = Field(
        description="`model`: the tokenizer's own template; `default`: the service's ChatML default"
    )
    eos_appended: bool = Field(description="Whether EOS is appended to trained assistant turns")
    notes: list[str] = Field(description="What the service changed about the template, if anything")
    marker: tuple[str, str] = Field(description="What opens and closes a trained span in `marked`")
    data: list[PreviewExample]


# -- models -----------------------------------------------------------------------------


class ModelObject(_Wire):
    """OpenAI's model object: a base model that can be fine-tuned (a directory under the
    models root, or a merged model the organization registered) or one of the
    organization's fine-tuned models (`ft:...`)."""

    id: str = Field(description="A base model's name, or a fine-tuned model's `ft:<base>:<org>[:<suffix>]:<job id>`")
    object: Literal["model"] = "model"
    created: int = Field(
        description="Unix seconds: when a base model's directory last changed (a registered model: when its merge "
        "finished), when a fine-tuned model's job finished"
    )
    owned_by: str = Field(
        description="`local`: a base model of the service; else the organization: a merged model it registered, or "
        "its fine-tuned model"
    )

    @classmethod
    def from_listed(cls, model: ListedModel) -> Self:
        return cls(id=model.id, created=model.created, owned_by=model.owned_by)


class DeletedModel(_Wire):
    id: str
    object: Literal["model"] = "model"
    deleted: Literal[True] = True


# -- fine-tuning jobs -------------------------------------------------------------------


class JobError(_Wire):
    """Why a job failed; the failure's event has the details."""

    code: str = Field(description="e.g. `model_load_failed`, `invalid_training_data`, `out_of_memory`, `worker_lost`")
    message: str
    param: str | None = Field(description="The field of the job spec to fix, if one is at fault")


class PreferenceStatistics(_Wire):
    """Token lengths of the parts of preference pairs (DPO)."""

    prompt_tokens_mean: float
    prompt_tokens_max: int
    chosen_tokens_mean: float = Field(description="Tokens of the preferred reply")
    chosen_tokens_max: int
    rejected_tokens_mean: float = Field(description="Tokens of the rejected reply")
    rejected_tokens_max: int


class TokenStatistics(_Wire):
    """The training data under the base model's tokenizer, computed at job creation. For
    preference data an example is a pair: its tokens are the prompt and the longer reply,
    its trained tokens both replies' tokens within `max_seq_length`."""

    examples: int
    tokens_total: int
    tokens_min: int = Field(description="Tokens of the shortest example, before truncation")
    tokens_mean: float
    tokens_p95: int
    tokens_max: int
    max_seq_length: int
    truncated_examples: int = Field(description="Examples longer than `max_seq_length`")
    trainable_tokens: int = Field(description="Tokens the loss is computed on, after truncation")
    examples_without_trainable_tokens: int
    chat_template: Literal["model", "default"] = Field(
        description="`model`: the tokenizer's own template; `default`: the service's ChatML default"
    )
    eos_appended: bool = Field(description="Whether EOS is appended to trained assistant turns")
    preference: PreferenceStatistics | None = Field(default=None, description="Preference data only")
    tasks: dict[str, int] | None = Field(
        default=None, description="Examples per task name (the examples' `task` field); null when they have none"
    )


class Speed(_Wire):
    """The speed settings the worker resolved for its device (README, "Speed")."""

    # Open: a newer worker may report more.
    model_config = ConfigDict(extra="allow")

    tokens_per_step: int | None = Field(description="Tokens per packed micro-batch; null: batches of examples")
    gradient_checkpointing: bool
    liger_kernel: bool
    optimizer: str
    attention: str
    upcast_unquantized: bool
    fused_lora: bool = Field(False, description="LoRA computed in one autograd function per 4-bit layer")


class Runtime(_Wire):
    """What the worker runs the job with, recorded when it starts."""

    # Open: an older or newer worker may report other keys; `speed` comes once the
    # model is loaded, so it is left out until then (not sent as null).
    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=False)

    device: str = Field(description="e.g. `cuda:0`, `cpu`")
    device_name: str
    compute_dtype: Literal["bfloat16", "float16", "float32"]
    memory_bytes: int = Field(description="Of the GPU, or of the host on a CPU")
    world_size: int = Field(
        default=1, description="The job's training processes, one per GPU (qlora.resources.gpus); 1: no DDP"
    )
    torch: str
    transformers: str
    peft: str
    trl: str
    bitsandbytes: str
    speed: Speed | None = Field(default=None, exclude_if=lambda speed: speed is None)


def _common_hyperparameters(method: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters every method has (DPO's beta is only in `method`)."""
    given = method[method["type"]]["hyperparameters"]
    return {name: given[name] for name in ResolvedHyperparameters.model_fields}


class Progress(_Wire):
    """Where a job's training is, as its worker last wrote it."""

    # Open: `at`, when it was measured, is the worker's bookkeeping.
    model_config = ConfigDict(extra="allow")

    step: int = Field(description="Optimizer steps done")
    total_steps: int = Field(description="Optimizer steps the trainer runs in all (max_steps, or n_epochs' steps)")
    epochs: int = Field(description="Epochs the trainer runs (the last one may be partial with max_steps)")
    seconds_per_step: float | None = Field(description="Mean time per step measured in this attempt")


class JobObject(_Wire):
    """OpenAI's fine-tuning job object, with the `qlora` extension and what the service
    adds (`statistics`, `runtime`, `progress`, `queue_position`, `attempts`,
    `pause_requested`, `from_checkpoint`)."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int = Field(description="Unix seconds")
    finished_at: int | None = Field(description="Unix seconds; null until the job ends")
    model: str = Field(
        description="The model as asked: a base model, or the fine-tuned model (or checkpoint) whose adapter the "
        "job continues training"
    )
    fine_tuned_model: str | None = Field(description="`ft:<base>:<org>[:<suffix>]:<job id>` once it succeeded")
    organization_id: str
    status: JobStatus
    training_file: str
    validation_file: str | None
    # The spec's own models, as resolved at creation (what the worker runs).
    hyperparameters: ResolvedHyperparameters = Field(
        description="`n_epochs`, `batch_size` and `learning_rate_multiplier` of the method's hyperparameters "
        "(OpenAI's deprecated top-level field)"
    )
    method: ResolvedMethod
    seed: int
    user_provided_suffix: str | None
    metadata: dict[str, str] | None
    result_files: list[str] = Field(
        description="Once it succeeded: the ids of its result files: `step_metrics.csv` (OpenAI's columns), "
        "`tensorboard.tar.gz` (TensorBoard event files) and `mlflow_metrics.csv` (MLflow's metric fields)"
    )
    trained_tokens: int | None = Field(
        description="Once it succeeded: the tokens the loss was computed on, summed over every step (an example "
        "trained in 3 epochs counts 3 times; prompt tokens masked from the loss do not count)"
    )
    error: JobError | None = Field(description="Why the job failed; null unless it did")
    estimated_finish: int | None = Field(
        description="Unix seconds: while running, when the job should finish, from its remaining steps at the "
        "step time its worker measured; null before the first steps are measured and once it is not running"
    )
    queue_position: int | None = Field(
        description="While queued: its place in the training queue among the queued jobs of the service "
        "(1: the next a free worker claims); null otherwise"
    )
    progress: Progress | None = Field(description="Where training is; null until a worker starts training it")
    integrations: list[Integration] = Field(
        description="The trackers the worker reports the run to, as asked (OpenAI's field); the job's events say "
        "whether it could"
    )
    qlora: ResolvedQLoRA
    statistics: TokenStatistics | None
    runtime: Runtime | None = Field(description="Null until a worker starts the job")
    attempts: int = Field(description="How many times a worker claimed the job (a lost worker's job runs again)")
    pause_requested: bool = Field(description="A running job asked to pause: it checkpoints and stops after its step")
    from_checkpoint: str | None = Field(
        description="The checkpoint whose adapter the job started from (an id or a `fine_tuned_model_checkpoint` name)"
    )

    @classmethod
    def from_row(cls, job: Job, queue_position: int | None = None) -> Self:
        """`queue_position`: of a queued job (core.jobs.queue_positions)."""
        spec = job.spec
        return cls.model_validate(
            {
                "id": job.id,
                "created_at": job.created_at,
                "finished_at": job.finished_at,
                "model": job.model,
                "fine_tuned_model": job.fine_tuned_model,
                "organization_id": job.organization_id,
                "status": job.status,
                "training_file": job.training_file,
                "validation_file": job.validation_file,
                "hyperparameters": _common_hyperparameters(spec["method"]),
                "method": spec["method"],
                "seed": job.seed,
                "user_provided_suffix": job.suffix,
                "metadata": job.metadata_,
                "result_files": job.result_files,
                "trained_tokens": job.trained_tokens,
                "error": job.error,
                "estimated_finish": estimated_finish(job),
                "queue_position": queue_position,
                "progress": job.progress,
                "integrations": spec.get("integrations", []),
                "qlora": spec["qlora"],
                "statistics": job.statistics,
                "runtime": job.runtime,
                "attempts": job.attempt,
                "pause_requested": job.pause_requested,
                "from_checkpoint": spec.get("from_checkpoint"),
            }
        )


class JobEventObject(_Wire):
    """One entry of a job's log (OpenAI's fine_tuning.job.event)."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int = Field(description="Unix seconds")
    level: Level
    message: str
    type: Literal["message", "metrics"] = Field(description="`metrics`: a point of the loss curve, in `data`")
    data: dict[str, Any] | None = Field(description="Structured details (a metrics point, a failure's exception)")

    @classmethod
    def from_row(cls, e: JobEvent) -> Self:
        return cls.model_validate(e, from_attributes=True)  # the row's columns bear the fields' names


class CheckpointObject(_Wire):
    """OpenAI's fine_tuning.job.checkpoint, and the adapter's size and digest."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int = Field(description="Unix seconds")
    fine_tuning_job_id: str
    fine_tuned_model_checkpoint: str = Field(description="The job's model name and `:ckpt-step-<step>`")
    step_number: int
    metrics: dict[str, int | float | None] = Field(
        description="At the checkpoint's step: `step`, and the newest `train_loss`, `train_mean_token_accuracy`, "
        "`valid_loss`, `valid_mean_token_accuracy` logged by then (those that were)"
    )
    adapter_bytes: int = Field(description="Size of the adapter download (.tar.gz)")
    adapter_sha256: str = Field(description="Of the adapter download")

    @classmethod
    def from_row(cls, job: Job, c: Checkpoint) -> Self:
        return cls.model_validate(
            {
                "id": c.id,
                "created_at": c.created_at,
                "fine_tuning_job_id": job.id,
                "fine_tuned_model_checkpoint": fine_tuned_models.checkpoint_name(job, c.step),
                "step_number": c.step,
                "metrics": c.metrics,
                "adapter_bytes": c.adapter_bytes,
                "adapter_sha256": c.adapter_sha256,
            }
        )


class MetricPoint(_Wire):
    """One point of a job's time series."""

    object: Literal["fine_tuning.job.metric"] = "fine_tuning.job.metric"
    step: int
    split: Literal["train", "valid"] = Field(description="`valid`: an evaluation on the validation data")
    epoch: float | None
    loss: float | None
    learning_rate: float | None
    grad_norm: float | None
    tokens_per_second: float | None
    mean_token_accuracy: float | None = Field(description="Share of trained tokens predicted exactly")
    tokens_seen: int | None = Field(
        description="Tokens of the training batches so far, prompts included (what `tokens_per_second` counts)"
    )
    trained_tokens: int | None = Field(
        description="Tokens the loss was computed on so far (the job's `trained_tokens`)"
    )
    rewards_chosen: float | None = Field(
        description="DPO: mean reward of the preferred replies (beta × their log-probability gain over the base)"
    )
    rewards_rejected: float | None = Field(description="DPO: mean reward of the rejected replies")
    rewards_margins: float | None = Field(description="DPO: mean of chosen minus rejected reward")
    rewards_accuracies: float | None = Field(
        description="DPO: share of pairs whose preferred reply has the higher reward"
    )
    created_at: int = Field(description="Unix seconds")

    @classmethod
    def from_row(cls, m: JobMetric) -> Self:
        return cls.model_validate(m, from_attributes=True)  # the row's columns bear the fields' names


# -- merges -----------------------------------------------------------------------------


class MergeError(_Wire):
    """Why a merge failed; the failure's event has the details."""

    code: str = Field(
        description="e.g. `base_model_not_found`, `adapter_not_found`, `out_of_memory`, `merge_failed`, `worker_lost`"
    )
    message: str
    param: str | None


class MergeRuntime(_Wire):
    """What the worker merged with, recorded once the model is merged."""

    # Open: a newer worker may report more.
    model_config = ConfigDict(extra="allow")

    device: str = Field(description="e.g. `cuda:0`, `cpu`")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(description="Of the merged weights")


class MergedArchive(_Wire):
    """The merged model, downloadable at `GET /v1/merges/{merge_id}/content`: one .tar
    that extracts into one folder (sharded safetensors, config, generation config,
    tokenizer, chat template, README.md)."""

    filename: str
    bytes: int
    sha256: str


class MergeObject(_Wire):
    """A merge operation: an adapter (a fine-tuned model or a checkpoint) merged into its
    full-precision base model by a worker."""

    id: str
    object: Literal["model.merge"] = "model.merge"
    created_at: int = Field(description="Unix seconds")
    started_at: int | None = Field(description="Unix seconds: when a worker first started it")
    finished_at: int | None = Field(description="Unix seconds; null until it ends")
    model: str = Field(description="The fine-tuned model or checkpoint merged")
    fine_tuning_job_id: str = Field(description="The job that trained the adapter")
    checkpoint_id: str | None = Field(description="The checkpoint merged; null for the job's final adapter")
    base_model: str = Field(description="The base model the adapter was merged into")
    adapter_type: str = Field(description="The adapter's method: `lora` (with DoRA, rsLoRA), `adalora`, `ia3`, ...")
    dtype: Dtype = Field(description="The dtype asked for")
    base_weights: BaseWeights = Field(
        description="`original`: merged into the base's own weights; `dequantized`: into the 4-bit weights the "
        "adapter was trained against, dequantized"
    )
    register_as: str | None = Field(
        description="The organization's base model it is registered as once it succeeded (GET /v1/models)"
    )
    status: MergeStatus
    error: MergeError | None = Field(description="Why the merge failed; null unless it did")
    runtime: MergeRuntime | None = Field(description="Null until the model is merged")
    archive: MergedArchive | None = Field(description="The merged model; null until the merge succeeded")
    attempts: int = Field(description="How many times a worker started it (a lost worker's merge runs again)")

    @classmethod
    def from_row(cls, m: Merge) -> Self:
        archive = (
            {"filename": m.filename, "bytes": m.bytes, "sha256": m.sha256}
            if m.status == MergeStatus.SUCCEEDED and m.storage_key
            else None
        )
        return cls.model_validate(
            {
                "id": m.id,
                "created_at": m.created_at,
                "started_at": m.started_at,
                "finished_at": m.finished_at,
                "model": m.model,
                "fine_tuning_job_id": m.job_id,
                "checkpoint_id": m.checkpoint_id,
                "base_model": m.base_model,
                "adapter_type": m.adapter_type,
                "dtype": m.dtype,
                "base_weights": m.base_weights,
                "register_as": m.registered_as,
                "status": m.status,
                "error": m.error,
                "runtime": m.runtime,
                "archive": archive,
                "attempts": m.attempt,
            }
        )


class DeletedMerge(_Wire):
    id: str
    object: Literal["model.merge"] = "model.merge"
    deleted: Literal[True] = True


class MergeEventObject(_Wire):
    """One entry of a merge's log."""

    id: str
    object: Literal["model.merge.event"] = "model.merge.event"
    created_at: int = Field(description="Unix seconds")
    level: Level
    message: str
    data: dict[str, Any] | None = Field(description="Structured details (timings, a failure's exception)")

    @classmethod
    def from_row(cls, e: MergeEvent) -> Self:
        return cls.model_validate(e, from_attributes=True)  # the row's columns bear the fields' names


# -- evaluations ------------------------------------------------------------------------


class EvaluationError(_Wire):
    """Why an evaluation failed; the failure's event in the job's log has the details."""

    code: str = Field(
        description="e.g. `base_model_not_found`, `adapter_not_found`, `file_not_found`, `out_of_memory`, "
        "`evaluation_failed`, `worker_lost`"
    )
    message: str
    param: str | None


class ModelScores(_Wire):
    """One model's figures on the evaluated examples."""

    loss: float | None = Field(
        description="Mean cross-entropy per trained token (the tokens training computes its loss on: the "
        "assistant turns, unless the job trained on inputs); null when no example has one"
    )
    perplexity: float | None = Field(description="exp(loss)")
    exact_match: float = Field(
        description="Share of examples whose greedy answer equals the reference after normalization (0 to 1)"
    )
    f1: float = Field(description="Mean token F1 of the greedy answers against the references (0 to 1)")
    n: int = Field(description="Examples evaluated")


class EvaluationResults(_Wire):
    base: ModelScores = Field(description="The base model prompted directly")
    fine_tuned: ModelScores = Field(description="The base model with the job's adapter")
    tokens: int = Field(description="Trained tokens the losses are computed over")


class EvaluationSample(_Wire):
    """One example, side by side."""

    prompt: str = Field(description="The conversation up to the answer, rendered by the chat template")
    reference: str
    base_answer: str
    fine_tuned_answer: str
    base_exact_match: float
    base_f1: float
    fine_tuned_exact_match: float
    fine_tuned_f1: float


class EvaluationRuntime(_Wire):
    """What the worker evaluated with, recorded once the models are loaded."""

    # Open: a newer worker may report more.
    model_config = ConfigDict(extra="allow")

    device: str = Field(description="e.g. `cuda:0`, `cpu`")
    compute_dtype: Literal["bfloat16", "float16", "float32"]


class EvaluationObject(_Wire):
    """A job's fine-tuned model judged against its base model on a set of examples."""

    id: str
    object: Literal["fine_tuning.job.evaluation"] = "fine_tuning.job.evaluation"
    created_at: int = Field(description="Unix seconds")
    started_at: int | None = Field(description="Unix seconds: when a worker first started it")
    finished_at: int | None = Field(description="Unix seconds; null until it ends")
    fine_tuning_job_id: str
    model: str = Field(description="The fine-tuned model evaluated")
    base_model: str = Field(description="The base model it is compared with")
    file: str = Field(description="The file of examples evaluated on")
    max_examples: int | None = Field(description="At most this many examples (the first ones); null: all")
    max_tokens: int = Field(description="The longest answer generated, in tokens")
    sample_size: int = Field(description="How many examples `sample` shows")
    status: EvaluationStatus
    error: EvaluationError | None = Field(description="Why the evaluation failed; null unless it did")
    runtime: EvaluationRuntime | None = Field(description="Null until a worker has loaded the models")
    results: EvaluationResults | None = Field(description="Null until the evaluation succeeded")
    sample: list[EvaluationSample] = Field(description="The first `sample_size` examples, side by side")
    result_files: list[str] = Field(
        description="Once it succeeded: the id of `evaluation.csv`, every example with both answers and scores "
        "(GET /v1/files/{id}/content)"
    )
    attempts: int = Field(description="How many times a worker started it (a lost worker's evaluation runs again)")

    @classmethod
    def from_row(cls, e: Evaluation) -> Self:
        return cls.model_validate(
            {
                "id": e.id,
                "created_at": e.created_at,
                "started_at": e.started_at,
                "finished_at": e.finished_at,
                "fine_tuning_job_id": e.job_id,
                "model": e.model,
                "base_model": e.base_model,
                "file": e.file_id,
                "max_examples": e.max_examples,
                "max_tokens": e.max_tokens,
                "sample_size": e.sample_size,
                "status": e.status,
                "error": e.error,
                "runtime": e.runtime,
                "results": e.results,
                "sample": e.sample or [],
                "result_files": e.result_files,
                "attempts": e.attempt,
            }
        )


# -- organization ---------------------------------------------------------------------


class StorageUsageObject(_Wire):
    """The organization's stored bytes against its quota (FTSVC_MAX_STORED_BYTES_PER_ORG)."""

    limit_bytes: int
    used_bytes: int = Field(description="The sum of `by_kind`: what the quota counts")
    available_bytes: int = Field(description="What uploads may still add (0 at or over the limit)")
    by_kind: dict[str, int] = Field(
        description="Bytes per kind of stored object: "
        + "; ".join(f"`{name}`: {kind.description}" for name, kind in STORED.items())
    )
    rejected_uploads_bytes: int = Field(
        description="Uploads that failed validation: not counted, removed after FTSVC_REJECTED_FILE_RETENTION_SECONDS"
    )

    @classmethod
    def of(cls, usage: StorageUsage) -> Self:
        return cls(
            limit_bytes=usage.limit,
            used_bytes=usage.used,
            available_bytes=usage.available,
            by_kind=usage.by_kind,
            rejected_uploads_bytes=usage.rejected_uploads,
        )


class ActiveJobsUsage(_Wire):
    active: int = Field(description="Jobs validating files, queued, running or paused")
    limit: int = Field(description="FTSVC_MAX_ACTIVE_JOBS_PER_ORG")


class OrganizationUsage(_Wire):
    """What the organization uses of its quotas."""

    object: Literal["organization.usage"] = "organization.usage"
    organization_id: str
    storage: StorageUsageObject
    jobs: ActiveJobsUsage


# -- webhooks -------------------------------------------------------------------------


class WebhookObject(_Wire):
    """An endpoint that receives the terminal events of the organization's jobs."""

    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    description: str | None
    events: list[EventType] = Field(description="The event types it receives")
    created_at: int = Field(description="Unix seconds")

    @classmethod
    def from_row(cls, w: Webhook) -> Self:
        return cls.model_validate(
            {"id": w.id, "url": w.url, "description": w.description, "events": w.events, "created_at": w.created_at}
        )


class WebhookWithSecret(WebhookObject):
    """An endpoint and its signing secret, which only its creation and a rotation show."""

    secret: str = Field(
        description="The signing secret (`whsec_` and the base64 key): store it now, it is not shown again"
    )

    @classmethod
    def from_row(cls, w: Webhook) -> Self:
        return cls.model_validate(WebhookObject.from_row(w).model_dump() | {"secret": w.secret})


class DeletedWebhook(_Wire):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: Literal[True] = True


class WebhookEventData(_Wire):
    id: str = Field(description="The fine-tuning job's id")


class WebhookEvent(_Wire):
    """The body POSTed to the endpoint (OpenAI's webhook event)."""

    object: Literal["event"] = "event"
    id: str = Field(description="Also the `webhook-id` header: the same on every attempt and redelivery")
    type: EventType
    created_at: int = Field(description="Unix seconds")
    data: WebhookEventData


class WebhookAttemptObject(_Wire):
    number: int
    attempted_at: float = Field(description="Unix seconds")
    duration_ms: int
    status_code: int | None = Field(description="The endpoint's answer; null when none came")
    error: str | None = Field(description="Why the attempt failed (non-2xx answer, timeout, network, refused URL)")

    @classmethod
    def from_row(cls, a: WebhookAttempt) -> Self:
        return cls(
            number=a.number,
            attempted_at=a.attempted_at,
            duration_ms=a.duration_ms,
            status_code=a.status_code,
            error=a.error,
        )


class WebhookDeliveryObject(_Wire):
    """One event sent to one endpoint, and its attempts so far."""

    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str
    event: WebhookEvent
    status: DeliveryStatus = Field(
        description="`pending` (an attempt is due at `next_attempt_at`), `delivered` (2xx), or `failed` (attempts "
        "ran out, 410 Gone, or the URL is no longer allowed)"
    )
    next_attempt_at: float | None = Field(description="Unix seconds; null unless pending")
    created_at: int = Field(description="Unix seconds")
    attempts: list[WebhookAttemptObject] = Field(description="Oldest first")

    @classmethod
    def from_row(cls, d: WebhookDelivery, attempts: list[WebhookAttempt]) -> Self:
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            event=WebhookEvent.model_validate_json(d.body),
            status=d.status,
            next_attempt_at=d.next_attempt_at,
            created_at=d.created_at,
            attempts=[WebhookAttemptObject.from_row(a) for a in attempts],
        )


class Health(_Wire):
    status: Literal["ok"] = "ok"


class ReadinessCheck(_Wire):
    ok: bool
    seconds: float = Field(description="How long the part took to answer (the timeout, if it did not)")
    error: str | None = Field(description="Why the part failed; null when it answered")


class Readiness(_Wire):
    """GET /readyz: 200 when every part answered, else 503 with the same body."""

    status: Literal["ready", "not_ready"]
    checks: dict[Literal["database", "broker", "store"], ReadinessCheck]
