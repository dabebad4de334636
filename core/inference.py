"""Generation with a base model or one of an organization's fine-tuned models (the
public `/v1/chat/completions` and `/v1/completions`): what a model's name stands for,
as an inference server loads it (`Target`), and the request the API sends one
(`GenerateRequest`, worker.inference.server). No torch: the API resolves names here,
the inference server reads the same models.

The internal protocol of an inference server (`ftsvc inference`):
- `POST /internal/generate` with a `GenerateRequest`: once the request's batch starts,
  200 and `application/x-ndjson`, one `GenerateEvent` a line: `start` (the prompt's
  token count), `delta`s (text), then `end` (finish reason and usage) or `error`.
  Before that, an error answer with the service's error body: 400 (a prompt longer
  than the context, max_tokens over it, what the template cannot render), 404 (the
  adapter's files are gone), 429 (its queue is full), 503 (no turn within
  `inference_queue_timeout_seconds`). Closing the connection stops the generation.
- `GET /internal/status`: `ServerStatus` (device, loaded models, counters).
- `GET /healthz`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core import catalog, fine_tuned_models, registered_models
from core.errors import Conflict, InvalidRequest
from core.merges import refuse_while_merging
from core.models import Job
from core.registry import ModelRef
from core.specs import Quantization, ResolvedSpec

# Adapters whose layers peft can switch per request (named adapters, mixed batches).
SERVABLE_ADAPTERS = ("lora",)
# Postgres' "lock not available" (SELECT ... NOWAIT on a row another transaction locked).
LOCK_NOT_AVAILABLE = "55P03"


class BaseTarget(BaseModel):
    """A base model as core.registry names it (a registered one: with its archive)."""

    name: str
    source: str
    archive_key: str | None = None
    created_at: int = 0

    @classmethod
    def of(cls, ref: ModelRef) -> BaseTarget:
        return cls(name=ref.name, source=ref.source, archive_key=ref.archive_key, created_at=ref.created_at)

    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.source, True, self.created_at, archive_key=self.archive_key)


class AdapterTarget(BaseModel):
    name: str  # the fine-tuned model's (or checkpoint's) name
    key: str  # its adapter archive in artifact storage


class Target(BaseModel):
    """What generates: a base, loaded as `quantization` says (None: unquantized), with
    an adapter or none."""

    base: BaseTarget
    adapter: AdapterTarget | None = None
    quantization: Quantization | None = None

    @property
    def base_key(self) -> str:
        """One loaded copy of a base per source and quantization."""
        q = self.quantization
        return f"{self.base.source}|{'none' if q is None else f'{q.quant_type}-{q.double_quant}'}"


class GenerateRequest(BaseModel):
    target: Target
    # A conversation (rendered by the base's chat template, as training renders it) or a
    # text to continue.
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None  # None: up to the context's end
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class GenerateEvent(BaseModel):
    type: Literal["start", "delta", "end", "error"]
    text: str = ""
    prompt_tokens: int = 0
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    # An `error`: the HTTP status it answers and the error object (message, type, ...).
    status: int = 0
    error: dict[str, Any] | None = None


class ServerStatus(BaseModel):
    url: str
    device: str
    device_name: str
    memory_bytes: int
    memory_budget_bytes: int
    loaded: dict[str, list[str]]  # each loaded base (its key) and the adapters on it
    base_loads: int
    adapter_loads: int
    queued: int
    running: int
    cancelled: int


def resolve(session: Session, org_id: str, model: str, param: str = "model") -> Target:
    """The target `model` names for the organization: 404 for a name it does not have
    (another organization's included), 409 while a merge is to read the fine-tuned
    model or a deletion of it is under way, 400 for an adapter peft cannot switch per
    request. A base model alone is loaded as the QLoRA default quantizes it, so that it
    shares one loaded copy with the adapters trained on it."""
    if not fine_tuned_models.is_fine_tuned_name(model):
        return Target(
            base=BaseTarget.of(catalog.base_model(session, org_id, model, param)), quantization=Quantization()
        )
    adapter = fine_tuned_models.find(session, org_id, model, param)
    refuse_while_merging(session, adapter.job.id, f"Model {model} cannot be used now")
    spec = ResolvedSpec.model_validate(adapter.job.spec)
    if spec.qlora.adapter.type not in SERVABLE_ADAPTERS:
        raise InvalidRequest(
            f"Model {model} is a {spec.qlora.adapter.type} adapter; inference serves LoRA adapters (merge it "
            "into its base to serve it as a model of its own)",
            param=param,
            code="adapter_not_servable",
        )
    try:
        base = registered_models.resolve_for(session, org_id, adapter.base_model)
    except InvalidRequest as missing:
        raise Conflict(
            f"Model {model}: its base model {adapter.base_model!r} is no longer present ({missing.message})",
            param=param,
            code="base_model_not_found",
        ) from None
    _refuse_while_deleting(session, adapter.job, model, param)
    return Target(
        base=BaseTarget.of(base),
        adapter=AdapterTarget(name=adapter.name, key=adapter.adapter_key),
        quantization=spec.qlora.quantization,
    )


def _refuse_while_deleting(session: Session, job: Job, model: str, param: str) -> None:
    """409 while a deletion of the model (or of its job, or a checkpoint) holds its job's
    row (core.jobs.lock_job) until it commits. Postgres only: on SQLite the deletion
    holds the database's write lock and reads see the state before it."""
    if session.get_bind().dialect.name != "postgresql":
        return
    try:
        session.execute(select(Job.pk).where(Job.pk == job.pk).with_for_update(read=True, nowait=True))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise Conflict(
            f"Model {model} is being deleted or changed; retry in a moment", param=param, code="model_busy"
        ) from None
